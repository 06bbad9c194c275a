package redlock_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
)

// stallNth is a context whose n-th Deadline call waits until let is
// closed: a node's goroutine of a fan-out (each derives its per-node
// context first) that the scheduler has not run yet when the others
// have answered.
type stallNth struct {
	context.Context
	n       int32
	calls   atomic.Int32
	stalled chan struct{}
	let     chan struct{}
}

func (c *stallNth) Deadline() (time.Time, bool) {
	if c.calls.Add(1) == c.n {
		close(c.stalled)
		<-c.let
	}
	return c.Context.Deadline()
}

// A node whose acquire had not even been queued on its goroutine when the
// quorum decided and the hold was released must not take the key after
// that release.
func TestUnqueuedStragglerDoesNotOutliveRelease(t *testing.T) {
	c := startNodes(t, 3)
	b := newBackend(t, c.clients)
	key := uniqueKey("unqueued")
	ctx := &stallNth{Context: context.Background(), n: 3, stalled: make(chan struct{}), let: make(chan struct{})}
	defer func() {
		select {
		case <-ctx.let:
		default:
			close(ctx.let)
		}
	}()
	lease, err := b.Acquire(ctx, lockReq(key))
	if err != nil {
		t.Fatalf("Acquire with two nodes answering: %v", err)
	}
	<-ctx.stalled
	if errs := b.Release(context.Background(), []ctxlock.Lease{lease}); errs[0] != nil {
		t.Fatalf("Release: %v", errs[0])
	}
	close(ctx.let)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := holders(t, c, b, key); got[0] != "" || got[1] != "" || got[2] != "" {
		t.Fatalf("lease owners per node after Release: %q; want none (a node ran the acquire after the release)", got)
	}
}
