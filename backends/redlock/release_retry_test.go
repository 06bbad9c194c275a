package redlock_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/redlock"
	"github.com/ctxlock/ctxlock/internal/faultproxy"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// A release a node did not answer, once a quorum had released, is retried
// in the background: the node drops the lease soon after it answers again,
// not at the lease's TTL. Two such leftovers of different holds, on two of
// three nodes, would otherwise keep every owner from a quorum until they
// lapsed (seen in TestStressRedlock's heavier runs).
func TestReleaseRetriedOnNodeThatDidNotAnswer(t *testing.T) {
	c, b, key := leaseLostOnNode2(t)
	waitFor(t, "node 2 to drop the lease", func() bool { return holders(t, c, b, key)[2] == "" })
}

// leaseLostOnNode2 acquires a lease of key (TTL 20s) through a Backend
// whose node 2 is behind a proxy, and releases it while the proxy
// blackholes node 2: the Release succeeds on a quorum and node 2 keeps the
// lease, its release still waiting for an answer. It returns with the
// proxy passing traffic again.
func leaseLostOnNode2(t *testing.T) (c *cluster, b *redlock.Backend, key string) {
	t.Helper()
	c = startNodes(t, 3)
	p := faultproxy.Start(t, c.servers[2].Addr())
	slow := redis.NewClient(redistest.ClientOptions(p.Addr()))
	t.Cleanup(func() { slow.Close() })
	b = newBackend(t, []redis.UniversalClient{c.clients[0], c.clients[1], slow})
	key = uniqueKey("retry")
	req := lockReq(key)
	req.TTL = 20 * time.Second
	lease, err := b.Acquire(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node 2 to hold the lease", func() bool { return holders(t, c, b, key)[2] == lease.Owner })

	p.Blackhole() // node 2's release is lost
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	errs := b.Release(ctx, []ctxlock.Lease{lease})
	cancel()
	if errs[0] != nil {
		t.Fatalf("Release with a quorum answering: %v", errs[0])
	}
	if h := holders(t, c, b, key); h[0] != "" || h[1] != "" || h[2] != lease.Owner {
		t.Fatalf("holders after the release %q; want only node 2 (its release lost)", h)
	}
	p.Pass()
	return c, b, key
}

// waitFor polls cond (state on the servers) until it holds, failing after
// well under the lease TTLs the tests use.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling the servers
	}
}

// A release still waiting to be sent again when the Backend closes is sent
// once more by Close: a lease whose release a node lost just before a
// shutdown would otherwise stay there for its TTL.
func TestCloseSendsReleasesQueuedForRetry(t *testing.T) {
	c, b, key := leaseLostOnNode2(t)
	// Close waits for node 2's release to time out; by then the Backend is
	// closed and its retrier does not start.
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if h := holders(t, c, b, key); h[2] != "" {
		t.Fatalf("node 2 still holds the lease (%q) after Close; want its queued release sent by Close", h[2])
	}
}
