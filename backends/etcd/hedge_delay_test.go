package etcd_test

import (
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/etcd"
	"github.com/ctxlock/ctxlock/internal/etcdtest"
	"github.com/ctxlock/ctxlock/internal/faultproxy"
)

// On a cluster whose round trip exceeds a twelfth of the TTL (here 400ms,
// through a proxy that delays each direction by 200ms, against 333ms for a
// 4s TTL), only the first Extend hedges: its read's round trip raises the
// hedge delay (twice the smoothed round trip, at most an eighth of the
// TTL), and later refreshes are answered before it. Before, every refresh
// was hedged, which doubled its load and, with authentication, made every
// hedge's new stream authenticate.
func TestHedgeDelayFollowsRoundTrip(t *testing.T) {
	s := etcdtest.Start(t)
	proxy := faultproxy.Start(t, s.Addr())
	b := newBackend(t, newClient(t, proxy.Addr()))
	const ttl = 4 * time.Second
	ctx := testCtx(t, time.Minute)
	lease, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: "k", Owner: "far", TTL: ttl, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if d := etcd.HedgeDelay(b, ttl); d != ttl/12 {
		t.Fatalf("hedge delay before any Extend = %v, want a twelfth of the TTL, %v", d, ttl/12)
	}
	proxy.Delay(200*time.Millisecond, 200*time.Millisecond)
	extend := func() {
		t.Helper()
		if errs := b.Extend(ctx, []ctxlock.Lease{lease}, ttl); errs[0] != nil {
			t.Fatal(errs[0])
		}
	}
	extend()
	first := etcd.Hedges(b)
	if first == 0 {
		t.Fatal("the first Extend over a 400ms round trip sent no hedge; want one (the delay was 333ms)")
	}
	if d := etcd.HedgeDelay(b, ttl); d != ttl/8 {
		t.Errorf("hedge delay after a 400ms read = %v, want the cap, an eighth of the TTL (%v)", d, ttl/8)
	}
	const later = 8
	for range later {
		extend()
	}
	// Each Extend would hedge its keep-alive and its read: 2 per refresh.
	// A stall of the machine may still make one hedge.
	if n := etcd.Hedges(b) - first; n > 2 {
		t.Errorf("%d hedges in %d later Extends over a 400ms round trip, want at most 2", n, later)
	}
	t.Logf("hedges: %d in the first Extend, %d in the %d after it", first, etcd.Hedges(b)-first, later)
	proxy.Pass()
	if errs := b.Release(ctx, []ctxlock.Lease{lease}); errs[0] != nil {
		t.Fatal(errs[0])
	}
}
