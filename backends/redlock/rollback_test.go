package redlock_test

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/redlock"
	"github.com/ctxlock/ctxlock/internal/faultproxy"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// cutAfterNext blackholes a proxy right after the next pipeline of the
// hooked client has been answered: the node answered that round trip, and
// the network to it fails from then on.
type cutAfterNext struct {
	armed atomic.Bool
	p     *faultproxy.Proxy
}

func (h *cutAfterNext) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *cutAfterNext) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *cutAfterNext) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if h.armed.CompareAndSwap(true, false) {
			h.p.Blackhole()
		}
		return err
	}
}

// An attempt granted by a minority and refused by a quorum gives its lease
// back on the granting node at once. When that fails, the attempt reports
// a fault, not a refusal: the Manager releases the lease again after a
// fault (not after ErrHeld), and otherwise the lease would keep the key
// for a whole TTL on that node, which, with one more node down, keeps
// everyone out of a lock nobody holds.
func TestRefusedAttemptFailedRollbackIsFault(t *testing.T) {
	c := startNodes(t, 3)
	p := faultproxy.Start(t, c.servers[2].Addr())
	viaProxy := redis.NewClient(redistest.ClientOptions(p.Addr()))
	t.Cleanup(func() { _ = viaProxy.Close() })
	hook := &cutAfterNext{p: p}
	viaProxy.AddHook(hook)
	clients := []redis.UniversalClient{c.clients[0], c.clients[1], viaProxy}
	b := newBackend(t, clients)
	ctx := context.Background()
	key := uniqueKey("ghost")
	lk, _, _ := b.Keys(key)
	const ttl = 10 * time.Second

	// A holds the key on nodes 0 and 1 (a quorum); node 2 lost its copy
	// (say it restarted).
	// (settled: every node has answered A's attempt before we go on)
	var a ctxlock.Lease
	settled(t, clients, func(sb *redlock.Backend) {
		var err error
		if a, err = sb.Acquire(ctx, ctxlock.AcquireRequest{Key: key, Owner: owner(), TTL: ttl, Timeout: time.Second}); err != nil {
			t.Fatal(err)
		}
	})
	if err := c.clients[2].Del(ctx, lk).Err(); err != nil {
		t.Fatal(err)
	}

	// B (a TryLock: no waiter): node 2 grants, nodes 0 and 1 refuse, and
	// the link to node 2 fails right after its answer.
	hook.armed.Store(true)
	bReq := ctxlock.AcquireRequest{Key: key, Owner: owner(), TTL: ttl, Timeout: 300 * time.Millisecond}
	_, err := b.Acquire(ctx, bReq)
	p.Pass()
	if errors.Is(err, ctxlock.ErrHeld) || !errors.Is(err, ctxlock.ErrUnavailable) {
		t.Fatalf("B's refused attempt, whose lease could not be given back = %v; want a fault (ErrUnavailable), not ErrHeld", err)
	}
	if got, err := c.clients[2].Get(ctx, lk).Result(); err != nil || got != bReq.Owner {
		t.Fatalf("scenario not reached: node 2 holds %q (%v), not B's lease", got, err)
	}
	// What the Manager does after the fault: an owner-checked release of
	// B's lease, retried until confirmed (Release returns once a quorum
	// confirmed it: wait for node 2 too).
	settled(t, clients, func(sb *redlock.Backend) {
		if errs := sb.Release(ctx, []ctxlock.Lease{{Key: key, Owner: bReq.Owner}}); errs[0] != nil {
			t.Fatal(errs[0])
		}
	})

	// A releases; node 0 dies (a minority failure Redlock must survive).
	if errs := b.Release(ctx, []ctxlock.Lease{a}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	c.servers[0].Kill()
	// Nobody holds the lock, and 2 of 3 nodes are up: C should get it.
	_, err = b.Acquire(ctx, ctxlock.AcquireRequest{Key: key, Owner: owner(), TTL: ttl, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatalf("C's Acquire of a lock nobody holds, with 2 of 3 nodes up: %v", err)
	}
}

// An Acquire gives up after req.Timeout (the Backend contract), the
// fencing-counter raise included: it is a second round trip, made only when
// the granting nodes' counters differ, and gets what is left of the
// attempt's time, not a fresh timeout.
func TestAcquireWithinItsTimeoutWithRaise(t *testing.T) {
	c := startNodes(t, 3)
	p := faultproxy.Start(t, c.servers[2].Addr())
	viaProxy := redis.NewClient(redistest.ClientOptions(p.Addr()))
	t.Cleanup(func() { _ = viaProxy.Close() })
	clients := []redis.UniversalClient{c.clients[0], c.clients[1], viaProxy}
	b := newBackend(t, clients)
	ctx := context.Background()

	// Warm up: scripts loaded and a pooled connection on node 2.
	raise, err := os.ReadFile("raise.lua")
	if err != nil {
		t.Fatal(err)
	}
	if err := viaProxy.ScriptLoad(ctx, string(raise)).Err(); err != nil {
		t.Fatal(err)
	}
	settled(t, clients, func(sb *redlock.Backend) { // every node's calls done before we go on
		w, err := sb.Acquire(ctx, ctxlock.AcquireRequest{Key: uniqueKey("warm"), Owner: owner(), TTL: 10 * time.Second, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		sb.Release(ctx, []ctxlock.Lease{w})
	})

	key := uniqueKey("slow")
	_, fk, _ := b.Keys(key)
	// Node 0's counter is ahead (earlier minority grants), node 1 is down.
	if err := c.clients[0].Set(ctx, fk, 100, 0).Err(); err != nil {
		t.Fatal(err)
	}
	c.servers[1].Kill()
	// Node 2 answers, but 500ms late: within the 600ms timeout, but its
	// raise would not be.
	p.Delay(0, 500*time.Millisecond)

	const timeout = 600 * time.Millisecond
	start := time.Now()
	lease, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: key, Owner: owner(), TTL: 10 * time.Second, Timeout: timeout})
	el := time.Since(start)
	t.Logf("Acquire: token %d, err %v, took %v (req.Timeout %v)", lease.Token, err, el, timeout)
	if el > timeout+200*time.Millisecond {
		t.Fatalf("one Acquire attempt took %v; the contract says it must give up after req.Timeout = %v", el, timeout)
	}
	if err != nil && !errors.Is(err, ctxlock.ErrUnavailable) {
		t.Fatalf("Acquire = %v; want success or a transient fault", err)
	}
}
