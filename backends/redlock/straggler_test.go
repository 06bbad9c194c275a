package redlock_test

import (
	"context"
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
