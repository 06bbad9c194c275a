package redlock_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// straggling returns a cluster of 3 whose node 2 holds its next Acquire or
// Relock pipeline until the hook lets it go.
func straggling(t *testing.T) (*cluster, []redis.UniversalClient, *redistest.HoldNextPipeline) {
	t.Helper()
	c := startNodes(t, 3)
	slow := c.servers[2].Client(t)
	h := redistest.NewHoldNextPipeline(t)
	slow.AddHook(h)
	return c, []redis.UniversalClient{c.clients[0], c.clients[1], slow}, h
}

// An Acquire decided by a quorum leaves the slowest node's call running;
// the hold's Release must not overtake it there, or that node keeps a lease
// nobody holds for its whole TTL (and with one more node down, nobody can
// take the key). Release on a node waits for the Acquire of the same key
// still in flight there.
func TestStragglerAcquireDoesNotOutliveRelease(t *testing.T) {
	c, clients, h := straggling(t)
	defer h.Let() // before newBackend's cleanup closes b, which waits for it
	b := newBackend(t, clients)
	ctx := context.Background()
	key := uniqueKey("straggler")

	lease, err := b.Acquire(ctx, lockReq(key))
	if err != nil {
		t.Fatalf("Acquire with nodes 0 and 1 free: %v", err)
	}
	<-h.Reached() // node 2's acquire is still to be written
	if errs := b.Release(ctx, []ctxlock.Lease{lease}); errs[0] != nil {
		t.Fatalf("Release: %v", errs[0])
	}
	h.Let()
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
	defer h.Let() // before newBackend's cleanup closes b, which waits for it
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
		<-h.Reached() // node 2's refusal is still to come: give up
		cancel()
	}()
	_, err := b.Acquire(actx, req)
	cancel()
	if err == nil {
		t.Fatal("Acquire of a key held everywhere succeeded")
	}
	if err := b.Leave(ctx, key, req.Waiter); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	h.Let()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := queues(t, c, b, key); got[0] != "[]" || got[1] != "[]" || got[2] != "[]" {
		t.Fatalf("queues after Leave: %q; want empty everywhere (node 2 queued the waiter after it left)", got)
	}
}

// afterPipeline calls f once the n-th pipeline of the hooked client has
// returned (hooked outermost: the pipeline a HoldNextPipeline added after
// it holds counts as it arrives).
type afterPipeline struct {
	n    int32
	seen atomic.Int32
	f    func()
}

func (h *afterPipeline) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *afterPipeline) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *afterPipeline) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		nth := h.seen.Add(1) == h.n
		err := next(ctx, cmds)
		if nth {
			h.f()
		}
		return err
	}
}

// A Release whose deadline is shorter than what the slow node's acquire may
// still take succeeds on the quorum; on the slow node the wait for the
// acquire is cut short by that deadline, and the release must still not be
// overtaken there: else the node keeps a lease nobody holds for its TTL,
// which is what TestStragglerAcquireDoesNotOutliveRelease guards against
// for a patient caller (the Manager bounds its releases, and redlock's
// per-node release timeout is at most DefaultReleaseTimeout, while an
// acquire's per-node timeout is a share of the TTL).
func TestStragglerAcquireDoesNotOutliveHastyRelease(t *testing.T) {
	c := startNodes(t, 3)
	slow := c.servers[2].Client(t)
	released := make(chan struct{})
	slow.AddHook(&afterPipeline{n: 2, f: func() { close(released) }}) // 1: the acquire, 2: the release
	h := redistest.NewHoldNextPipeline(t)
	slow.AddHook(h)
	defer h.Let()
	b := newBackend(t, []redis.UniversalClient{c.clients[0], c.clients[1], slow})
	ctx := context.Background()
	key := uniqueKey("hasty")

	req := lockReq(key)
	req.TTL, req.Timeout = time.Minute, time.Minute // node 2 may take 6s
	actx, cancelAcquire := context.WithCancel(ctx)
	defer cancelAcquire()
	lease, err := b.Acquire(actx, req)
	if err != nil {
		t.Fatalf("Acquire with nodes 0 and 1 free: %v", err)
	}
	<-h.Reached()   // node 2's acquire is still to be written
	cancelAcquire() // node 2's caller stops waiting (its call goes on)
	rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	errs := b.Release(rctx, []ctxlock.Lease{lease})
	cancel()
	if errs[0] != nil {
		t.Fatalf("Release: %v", errs[0])
	}
	<-released // node 2 tried its release, and gave up waiting
	h.Let()
	if err := b.Close(); err != nil { // waits for every node's calls
		t.Fatal(err)
	}
	if got := holders(t, c, b, key); got[0] != "" || got[1] != "" || got[2] != "" {
		t.Fatalf("lease owners per node after Release: %q; want none (node 2 ran the acquire after the release)", got)
	}
}
