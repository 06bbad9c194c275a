package redlock_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/redlock"
)

// nodeHook records the round trips and commands of one node's client, and
// can fail the client's next single command with a transport error (as a
// broken connection would) without sending it.
type nodeHook struct {
	mu       sync.Mutex
	trips    int
	cmds     []string
	failNext bool
}

// errInjected is not a redis.Error: the backends take it for a transport fault.
var errInjected = errors.New("injected: connection reset")

func (h *nodeHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *nodeHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.mu.Lock()
		fail := h.failNext
		h.failNext = false
		if !fail {
			h.trips++
			h.cmds = append(h.cmds, cmd.Name())
		}
		h.mu.Unlock()
		if fail {
			cmd.SetErr(errInjected)
			return errInjected
		}
		return next(ctx, cmd)
	}
}

func (h *nodeHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.mu.Lock()
		h.trips++
		for _, c := range cmds {
			h.cmds = append(h.cmds, c.Name())
		}
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}

func (h *nodeHook) failNextCommand() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failNext = true
}

// take returns what was recorded since the last take.
func (h *nodeHook) take() (trips int, cmds []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	trips, cmds = h.trips, h.cmds
	h.trips, h.cmds = 0, nil
	return trips, cmds
}

func hookAll(c *cluster) []*nodeHook {
	hooks := make([]*nodeHook, len(c.clients))
	for i, cl := range c.clients {
		hooks[i] = &nodeHook{}
		cl.AddHook(hooks[i])
	}
	return hooks
}

// TestRelockOneFanOut: an uncontended relock releases the old lease and
// takes the key again with one script per node, one round trip each, and
// a larger fencing token.
func TestRelockOneFanOut(t *testing.T) {
	c := startNodes(t, 5)
	hooks := hookAll(c)
	ctx := context.Background()
	key := uniqueKey("k")
	var first, second, third ctxlock.Lease
	settled(t, c.clients, func(b *redlock.Backend) {
		var err error
		if first, err = b.Acquire(ctx, lockReq(key)); err != nil {
			t.Fatalf("Acquire: %v", err)
		}
	})
	// The first relock loads the script on every node (EVALSHA, NOSCRIPT, EVAL).
	settled(t, c.clients, func(b *redlock.Backend) {
		var wanted bool
		var err error
		second, wanted, _, err = b.Relock(ctx, first, lockReq(key))
		if err != nil || wanted || second.Token <= first.Token {
			t.Fatalf("first Relock: %+v, wanted %v, %v; want a lease with a token > %d", second, wanted, err, first.Token)
		}
	})
	for _, h := range hooks {
		h.take()
	}
	req := lockReq(key)
	settled(t, c.clients, func(b *redlock.Backend) {
		var wanted bool
		var err error
		third, wanted, _, err = b.Relock(ctx, second, req)
		if err != nil || wanted || third.Token <= second.Token || third.Key != key || third.Owner != req.Owner {
			t.Fatalf("Relock: %+v, wanted %v, %v; want %q/%q with a token > %d", third, wanted, err, key, req.Owner, second.Token)
		}
	})
	for i, h := range hooks {
		if trips, cmds := h.take(); trips != 1 || !slices.Equal(cmds, []string{"evalsha"}) {
			t.Errorf("node %d: %d round trips %q for one Relock; want one EVALSHA", i, trips, cmds)
		}
	}
	settled(t, c.clients, func(b *redlock.Backend) {
		if got := holders(t, c, b, key); !slices.Equal(got, repeat(req.Owner, 5)) {
			t.Errorf("holders: %q; want the new owner on every node", got)
		}
		if errs := b.Release(ctx, []ctxlock.Lease{third}); errors.Join(errs...) != nil {
			t.Fatalf("Release: %v", errs)
		}
	})
}

// TestRelockYieldsToWaitingOwner: after another owner was refused, a relock
// releases the key everywhere without taking it (wanted), the waiting owner
// hears of it and gets the key with the next token.
func TestRelockYieldsToWaitingOwner(t *testing.T) {
	c := startNodes(t, 5)
	ctx := context.Background()
	key := uniqueKey("k")
	first := acquireSettled(t, c.clients, key)
	other := newBackend(t, c.clients)
	otherReq := lockReq(key)
	if _, err := other.Acquire(ctx, otherReq); !errors.Is(err, ctxlock.ErrHeld) {
		t.Fatalf("other owner's Acquire: %v; want ErrHeld", err)
	}
	released, stop := other.Watch(key)
	defer stop()
	settled(t, c.clients, func(b *redlock.Backend) {
		got, wanted, queued, err := b.Relock(ctx, first, lockReq(key))
		if err != nil || !wanted || !queued || got != (ctxlock.Lease{}) {
			t.Fatalf("Relock of a wanted key: %+v, wanted %v, queued %v, %v; want released, not taken, queued behind the waiter", got, wanted, queued, err)
		}
		// Every node answered and the key is free on all of them.
		if got := holders(t, c, b, key); !slices.Equal(got, repeat("", 5)) {
			t.Errorf("holders after a yielding Relock: %q; want none", got)
		}
	})
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting owner heard nothing of the yielding relock")
	}
	l, err := other.Acquire(ctx, otherReq)
	if err != nil || l.Token <= first.Token {
		t.Fatalf("the waiting owner's Acquire: %+v, %v; want the key with a token > %d", l, err, first.Token)
	}
	if errs := other.Release(ctx, []ctxlock.Lease{l}); errors.Join(errs...) != nil {
		t.Fatalf("Release: %v", errs)
	}
}

// TestRelockYieldsToTryLock: a relock after a refused TryLock (an owner
// that does not queue) releases the key without taking it, and does not
// report its waiter queued: no node queued it, so no hint would come.
func TestRelockYieldsToTryLock(t *testing.T) {
	c := startNodes(t, 5)
	ctx := context.Background()
	key := uniqueKey("k")
	first := acquireSettled(t, c.clients, key)
	other := newBackend(t, c.clients)
	tryReq := lockReq(key)
	tryReq.Waiter = ""
	if _, err := other.Acquire(ctx, tryReq); !errors.Is(err, ctxlock.ErrHeld) {
		t.Fatalf("other owner's Acquire: %v; want ErrHeld", err)
	}
	settled(t, c.clients, func(b *redlock.Backend) {
		got, wanted, queued, err := b.Relock(ctx, first, lockReq(key))
		if err != nil || !wanted || queued || got != (ctxlock.Lease{}) {
			t.Fatalf("Relock of a key a TryLock wanted: %+v, wanted %v, queued %v, %v; want released, not taken, not queued", got, wanted, queued, err)
		}
		if got := holders(t, c, b, key); !slices.Equal(got, repeat("", 5)) {
			t.Errorf("holders after a yielding Relock: %q; want none", got)
		}
	})
}

// TestRelockRefused: a relock of a lease that is gone, with the key held by
// another owner, is refused like an Acquire, and leaves nothing behind.
func TestRelockRefused(t *testing.T) {
	c := startNodes(t, 5)
	ctx := context.Background()
	key := uniqueKey("k")
	b := newBackend(t, c.clients)
	gone := ctxlock.Lease{Key: key, Owner: owner(), Token: 1}
	var holder ctxlock.Lease
	settled(t, c.clients, func(b *redlock.Backend) {
		var err error
		if holder, err = b.Acquire(ctx, lockReq(key)); err != nil {
			t.Fatalf("Acquire: %v", err)
		}
	})
	_, wanted, _, err := b.Relock(ctx, gone, lockReq(key))
	var he *ctxlock.HeldError
	var qe *redlock.QuorumError
	if wanted || !errors.As(err, &he) || he.Remaining <= 9*time.Second || !errors.As(err, &qe) || qe.Op != "relock" {
		t.Fatalf("Relock of a key held by another owner: wanted %v, %v; want a HeldError with the holder's TTL", wanted, err)
	}
	if got := holders(t, c, b, key); !slices.Equal(got, repeat(holder.Owner, 5)) {
		t.Errorf("holders: %q; want the holder everywhere", got)
	}
}

// TestRelockWithNodeDown: a quorum of live nodes is enough; with too few it
// is an outage (the Manager then retries the release of the old lease).
func TestRelockWithNodeDown(t *testing.T) {
	c := startNodes(t, 5)
	ctx := context.Background()
	key := uniqueKey("k")
	first := acquireSettled(t, c.clients, key)
	c.servers[4].Kill()
	req := lockReq(key)
	var second ctxlock.Lease
	settled(t, c.clients, func(b *redlock.Backend) {
		var wanted bool
		var err error
		second, wanted, _, err = b.Relock(ctx, first, req)
		if err != nil || wanted || second.Token <= first.Token || second.Owner != req.Owner {
			t.Fatalf("Relock with node 4 down: %+v, wanted %v, %v; want a lease with a token > %d", second, wanted, err, first.Token)
		}
	})
	settled(t, c.clients, func(b *redlock.Backend) {
		if got := holders(t, c, b, key); !slices.Equal(got, append(repeat(req.Owner, 4), "")) {
			t.Errorf("holders: %q; want the new owner on the 4 live nodes", got)
		}
	})

	c.servers[3].Kill()
	c.servers[2].Kill()
	settled(t, c.clients, func(b *redlock.Backend) {
		_, wanted, _, err := b.Relock(ctx, second, lockReq(key))
		var qe *redlock.QuorumError
		if wanted || !errors.Is(err, ctxlock.ErrUnavailable) || !errors.As(err, &qe) || qe.Op != "relock" || qe.Count(redlock.NodeUnreachable) != 3 {
			t.Fatalf("Relock with 3 of 5 down: wanted %v, %v; want an unavailable QuorumError", wanted, err)
		}
	})
}

// TestRelockReleasesOldWhereItFailed: a node whose relock fails with a
// transport error still gets the old lease released, while a quorum of the
// others grants the new one.
func TestRelockReleasesOldWhereItFailed(t *testing.T) {
	c := startNodes(t, 5)
	hooks := hookAll(c)
	ctx := context.Background()
	key := uniqueKey("k")
	first := acquireSettled(t, c.clients, key)
	hooks[4].failNextCommand()
	req := lockReq(key)
	settled(t, c.clients, func(b *redlock.Backend) {
		second, wanted, _, err := b.Relock(ctx, first, req)
		if err != nil || wanted || second.Token <= first.Token {
			t.Fatalf("Relock with node 4 failing: %+v, wanted %v, %v; want a lease with a token > %d", second, wanted, err, first.Token)
		}
	})
	settled(t, c.clients, func(b *redlock.Backend) {
		if got := holders(t, c, b, key); !slices.Equal(got, append(repeat(req.Owner, 4), "")) {
			t.Errorf("holders: %q; want the new owner on nodes 0-3 and the old lease released on node 4", got)
		}
	})
}

// acquireSettled acquires key with a Backend of its own and returns once
// every node has answered.
func acquireSettled(t *testing.T, clients []redis.UniversalClient, key string) ctxlock.Lease {
	t.Helper()
	var lease ctxlock.Lease
	settled(t, clients, func(b *redlock.Backend) {
		var err error
		if lease, err = b.Acquire(context.Background(), lockReq(key)); err != nil {
			t.Fatalf("Acquire: %v", err)
		}
	})
	return lease
}
