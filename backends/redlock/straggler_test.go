package redlock_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/redlock"
)

// holdNextPipeline holds the next pipeline of the hooked client (the
// batcher's, carrying Acquire and Relock calls) before it is written, until
// the test lets it go: a node whose answer straggles after the attempt was
// decided without it. Other pipelines and single commands pass.
type holdNextPipeline struct {
	armed   atomic.Bool
	reached chan struct{} // closed when the held pipeline is held
	release chan struct{} // closed by the test to let it go
}

func newHoldNextPipeline() *holdNextPipeline {
	h := &holdNextPipeline{reached: make(chan struct{}), release: make(chan struct{})}
	h.armed.Store(true)
	return h
}

func (h *holdNextPipeline) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *holdNextPipeline) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *holdNextPipeline) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.armed.CompareAndSwap(true, false) {
			close(h.reached)
			<-h.release
		}
		return next(ctx, cmds)
	}
}

// straggling returns a cluster of 3 whose node 2 holds its next Acquire or
// Relock pipeline until the hook's release is closed.
func straggling(t *testing.T) (*cluster, []redis.UniversalClient, *holdNextPipeline) {
	t.Helper()
	c := startNodes(t, 3)
	slow := c.servers[2].Client(t)
	h := newHoldNextPipeline()
	slow.AddHook(h)
	t.Cleanup(func() {
		select {
		case <-h.release:
		default:
			close(h.release)
		}
	})
	return c, []redis.UniversalClient{c.clients[0], c.clients[1], slow}, h
}

// An Acquire decided by a quorum leaves the slowest node's call running;
// the hold's Release must not overtake it there, or that node keeps a lease
// nobody holds for its whole TTL (and with one more node down, nobody can
// take the key). Release on a node waits for the Acquire of the same key
// still in flight there.
func TestStragglerAcquireDoesNotOutliveRelease(t *testing.T) {
	c, clients, h := straggling(t)
	b := newBackend(t, clients)
	ctx := context.Background()
	key := uniqueKey("straggler")

	lease, err := b.Acquire(ctx, lockReq(key))
	if err != nil {
		t.Fatalf("Acquire with nodes 0 and 1 free: %v", err)
	}
	<-h.reached // node 2's acquire is still to be written
	if errs := b.Release(ctx, []ctxlock.Lease{lease}); errs[0] != nil {
		t.Fatalf("Release: %v", errs[0])
	}
	close(h.release)
	if err := b.Close(); err != nil { // waits for every node's calls
		t.Fatal(err)
	}
	if got := holders(t, c, b, key); got[0] != "" || got[1] != "" || got[2] != "" {
		t.Fatalf("lease owners per node after Release: %q; want none (node 2 ran the acquire after the release)", got)
	}
}

// A Lock call that gives up while a node's refusal is still on its way
// leaves the queue with Leave; the late refusal must not queue the waiter
// again on that node, where it would stand first for a key it no longer
// wants (until the node drops it after goredis.WithWaiterKeep).
func TestLeaveAfterStragglingRefusalLeavesNoPlace(t *testing.T) {
	c, clients, h := straggling(t)
	b := newBackend(t, clients)
	ctx := context.Background()
	key := uniqueKey("leave")
	lk, _, _ := b.Keys(key)
	for _, cl := range c.clients {
		if err := cl.Set(ctx, lk, "someone-else", 10*time.Second).Err(); err != nil {
			t.Fatal(err)
		}
	}

	req := lockReq(key)
	actx, cancel := context.WithCancel(ctx)
	go func() {
		<-h.reached // node 2's refusal is still to come: give up
		cancel()
	}()
	_, err := b.Acquire(actx, req)
	cancel()
	if err == nil {
		t.Fatal("Acquire of a key held everywhere succeeded")
	}
	var re *redlock.QuorumError
	if !errors.As(err, &re) && !errors.Is(err, ctxlock.ErrHeld) {
		t.Logf("Acquire: %v", err)
	}
	if err := b.Leave(ctx, key, req.Waiter); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	close(h.release)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := queues(t, c, b, key); got[0] != "[]" || got[1] != "[]" || got[2] != "[]" {
		t.Fatalf("queues after Leave: %q; want empty everywhere (node 2 queued the waiter after it left)", got)
	}
}
