package redlock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/backends/locktest"
	"github.com/ctxlock/ctxlock/backends/redlock"
)

var clockTokens = redlock.WithNodeOptions(goredis.WithClockTokens(time.Hour))

// TestConformanceClockTokens runs the locktest suite on three nodes whose
// tokens come from their clocks.
func TestConformanceClockTokens(t *testing.T) {
	c := startNodes(t, 3)
	locktest.Run(t, func(t *testing.T) ctxlock.Backend {
		b := newBackend(t, c.clients, clockTokens)
		return &faultyBackend{RelockingOutage: locktest.NewRelockingOutage(b), rb: b, clients: c.clients}
	}, locktest.WithTTL(time.Second))
}

// With clock tokens a node restarted empty does not set the tokens back,
// and the counters a hold's quorum carries (raised ones included) keep
// their TTL, so that they expire when the key is no longer used.
func TestClockTokensAfterNodeRestart(t *testing.T) {
	c := startNodes(t, 3)
	ctx := context.Background()
	key := uniqueKey("k")
	b := newBackend(t, c.clients, clockTokens)
	_, fk, _ := b.Keys(key)
	var last uint64
	for range 3 {
		l, err := acquire(t, b, key, 10*time.Second)
		if err != nil || l.Token <= last || l.Token < 1e15 {
			t.Fatalf("Acquire: %+v, %v; want a clock token above %d", l, err, last)
		}
		last = l.Token
		if errs := b.Release(ctx, []ctxlock.Lease{l}); errors.Join(errs...) != nil {
			t.Fatal(errs)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	carried := 0
	for i, cl := range c.clients {
		pttl, err := cl.PTTL(ctx, fk).Result()
		if err != nil || pttl == -1 || pttl > time.Hour {
			t.Fatalf("node %d: fence counter PTTL %v, %v; want the counter TTL (1h), or no counter", i, pttl, err)
		}
		if n, err := cl.Get(ctx, fk).Uint64(); err == nil && n >= last {
			carried++
		}
	}
	if carried < 2 {
		t.Fatalf("%d nodes carry the last token %d; want a quorum", carried, last)
	}

	c.servers[0].Kill()
	c.servers[0].Restart()
	clients := []redis.UniversalClient{c.servers[0].Client(t), c.clients[1], c.clients[2]}
	b = newBackend(t, clients, clockTokens)
	for range 3 {
		l, err := acquire(t, b, key, 10*time.Second)
		if err != nil || l.Token <= last {
			t.Fatalf("Acquire after node 0 restarted empty: %+v, %v; want a token above %d", l, err, last)
		}
		last = l.Token
		if errs := b.Release(ctx, []ctxlock.Lease{l}); errors.Join(errs...) != nil {
			t.Fatal(errs)
		}
	}
}

// The scenario of TestTokensAfterOneNodeLosesCounters, with clock tokens:
// the one node B's quorum shares with A's restarts empty, and B's token is
// still above A's.
func TestClockTokensWhenSharedNodeRestarts(t *testing.T) {
	c := startNodes(t, 3)
	p0, p1, clients := proxyFirstTwo(t, c)
	ctx := context.Background()
	key := uniqueKey("k")
	var first, second ctxlock.Lease
	settledWith(t, append(clients, c.clients[2]), []redlock.Option{clockTokens}, func(b *redlock.Backend) {
		p1.Blackhole() // node 1 misses A
		var err error
		if first, err = quickAcquire(b, key); err != nil {
			t.Fatalf("A: %v", err)
		}
		if errs := b.Release(ctx, []ctxlock.Lease{first}); errors.Join(errs...) != nil {
			t.Fatalf("release A: %v", errs)
		}
	})
	p1.Pass()
	c.servers[2].Kill() // node 2 loses its counters (and leases)
	c.servers[2].Restart()
	p0.Blackhole() // node 0 misses B
	settledWith(t, append(clients, c.servers[2].Client(t)), []redlock.Option{clockTokens}, func(b *redlock.Backend) {
		var err error
		if second, err = quickAcquire(b, key); err != nil {
			t.Fatalf("B: %v", err)
		}
	})
	p0.Pass()
	if second.Token <= first.Token {
		t.Fatalf("B's token %d ≤ A's %d although the nodes' tokens follow their clocks", second.Token, first.Token)
	}
}

// quickAcquire is acquire with a short attempt timeout: the blackholed
// node's call, which Close waits for, ends soon.
func quickAcquire(b *redlock.Backend, key string) (ctxlock.Lease, error) {
	return b.Acquire(context.Background(), ctxlock.AcquireRequest{Key: key, Owner: owner(), TTL: 10 * time.Second, Timeout: 300 * time.Millisecond})
}
