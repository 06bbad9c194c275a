package ctxlock_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	ctxlockotel "github.com/ctxlock/ctxlock/otel"
)

// TestOtelOwnReleaseInFlightIsNotContention: a Lock call that waits only
// for its own Manager's release of the key, already in flight (nobody else
// holds or waits for the key), is not contended: no ctxlock.contention, and
// a span with ctxlock.contended false. The key is ours to free, as for a
// TryLock, which waits the same way without counting it.
func TestOtelOwnReleaseInFlightIsNotContention(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newOtelRig(t, 1)
		defer r.close()
		ctx := context.Background()
		l := r.ms[0].NewLock("orders")
		if _, err := l.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		r.be.SetLatency(time.Second)
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // the release is in a worker, sleeping in the backend
		r.be.SetLatency(0)
		if _, err := l.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		defer l.Unlock()
		if got := otelSum(t, r.collect(), ctxlockotel.MetricContention, otelOrders); got != 0 {
			t.Errorf("a Lock waiting only for its own Manager's release: %s = %d, want 0", ctxlockotel.MetricContention, got)
		}
		locks := r.spans(ctxlockotel.SpanLock)
		if len(locks) != 2 {
			t.Fatalf("%d lock spans, want 2", len(locks))
		}
		if a := otelAttrs(locks[1]); a[ctxlockotel.AttrContended].AsBool() || a[ctxlockotel.AttrWaitTime].AsFloat64() != 0 {
			t.Errorf("second Lock span: contended %v, wait_time %v; want false, 0", a[ctxlockotel.AttrContended].String(), a[ctxlockotel.AttrWaitTime].String())
		}
	})
}
