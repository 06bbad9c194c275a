package ctxlock_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
)

// wqWaiterRecorder is a wqBackend that records the waiter id of each
// Acquire, in order.
type wqWaiterRecorder struct {
	*wqBackend
	mu      sync.Mutex
	waiters []string
}

func (r *wqWaiterRecorder) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	if req.Waiter != "" {
		r.mu.Lock()
		r.waiters = append(r.waiters, req.Waiter)
		r.mu.Unlock()
	}
	return r.wqBackend.Acquire(ctx, req)
}

// TestWaiterIDsSortInCallOrder: waiter ids sort (byte-wise) in the order
// their Lock calls started, also for calls that start at the same instant
// of the clock (fake time, a coarse clock) in different Managers of one
// process. A hinting waiter queue
// (goredis.WithWaiterHints, redlock) orders its queue by these ids: calls
// out of order there jump the queue (the model found a releaser's relock
// queue ahead of the waiter it yielded to, and take the key back).
func TestWaiterIDsSortInCallOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &wqWaiterRecorder{wqBackend: newWQBackend(wqConfig{hintWindow: 50 * time.Millisecond}, 1)}
		defer rec.Close()
		var mgrs []*ctxlock.Manager
		for range 13 {
			m := ctxlock.NewManager(rec)
			defer m.Close(context.Background())
			mgrs = append(mgrs, m)
		}
		holder := mgrs[0].NewLock("k")
		if _, err := holder.Lock(t.Context()); err != nil {
			t.Fatal(err)
		}
		rec.mu.Lock()
		rec.waiters = nil // the holder's
		rec.mu.Unlock()
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		const calls = 12
		for i := range calls {
			l := mgrs[1+i].NewLock("k") // one call per Manager: each makes backend attempts
			wg.Go(func() { _, _ = l.Lock(ctx) })
			synctest.Wait() // its first attempt is made (and refused)
		}
		cancel()
		wg.Wait()
		var first []string // each call's waiter id, in call order
		seen := map[string]bool{}
		for _, w := range rec.waiters {
			if !seen[w] {
				seen[w] = true
				first = append(first, w)
			}
		}
		if len(first) != calls {
			t.Fatalf("%d waiter ids for %d calls", len(first), calls)
		}
		for i := 1; i < len(first); i++ {
			if first[i] <= first[i-1] {
				t.Errorf("call %d's waiter id %q does not sort after call %d's %q", i, first[i], i-1, first[i-1])
			}
		}
		_ = holder.Unlock()
	})
}
