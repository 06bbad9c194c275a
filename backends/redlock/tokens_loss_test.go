package redlock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/redlock"
	"github.com/ctxlock/ctxlock/internal/faultproxy"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// TestTokensAfterOneNodeLosesCounters pins down what the fencing tokens do
// NOT promise: one node of three losing its counters (a restart without
// persistence) is enough for a later holder to get a smaller token, although
// the other two (a majority) kept theirs. A's quorum was nodes 0 and 2
// (node 1 unreachable then), so only they carry A's token; node 2 loses it,
// and B's quorum is nodes 1 and 2 (node 0 unreachable then).
func TestTokensAfterOneNodeLosesCounters(t *testing.T) {
	c := startNodes(t, 3)
	p0, p1, clients := proxyFirstTwo(t, c)
	clients = append(clients, c.clients[2])
	ctx := context.Background()
	key := uniqueKey("k")
	var first, second ctxlock.Lease
	settled(t, clients, func(b *redlock.Backend) {
		_, fk, _ := b.Keys(key)
		if err := c.clients[0].Set(ctx, fk, 100, 0).Err(); err != nil {
			t.Fatal(err)
		}
		p1.Blackhole() // node 1 misses A
		var err error
		if first, err = acquire(t, b, key, 10*time.Second); err != nil || first.Token != 101 {
			t.Fatalf("A: %+v, %v; want token 101", first, err)
		}
		if errs := b.Release(ctx, []ctxlock.Lease{first}); errors.Join(errs...) != nil {
			t.Fatalf("release A: %v", errs)
		}
	})
	p1.Pass()
	c.servers[2].FlushAll(t) // node 2 loses its counters (and leases)
	p0.Blackhole()           // node 0 misses B
	settled(t, clients, func(b *redlock.Backend) {
		var err error
		if second, err = acquire(t, b, key, 10*time.Second); err != nil {
			t.Fatalf("B: %v", err)
		}
	})
	p0.Pass()
	if second.Token > first.Token {
		t.Fatalf("B's token %d > A's %d: the limit documented no longer applies; update the package doc", second.Token, first.Token)
	}
	t.Logf("A's token %d, B's token %d: one node of three lost its counters", first.Token, second.Token)
}

// proxyFirstTwo puts a fault proxy before each of nodes 0 and 1 of c, and
// returns them with a client through each (node 2 is reached directly, by
// c.clients[2]).
func proxyFirstTwo(t *testing.T, c *cluster) (p0, p1 *faultproxy.Proxy, clients []redis.UniversalClient) {
	t.Helper()
	p0 = faultproxy.Start(t, c.servers[0].Addr())
	p1 = faultproxy.Start(t, c.servers[1].Addr())
	for _, p := range []*faultproxy.Proxy{p0, p1} {
		cl := redis.NewClient(redistest.ClientOptions(p.Addr()))
		t.Cleanup(func() { _ = cl.Close() })
		clients = append(clients, cl)
	}
	return p0, p1, clients
}
