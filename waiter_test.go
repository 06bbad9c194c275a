package ctxlock_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// waiterRecorder is a memory backend that claims to be a WaiterQueue (it
// never hints: waiters poll) and records the waiter ids Lock calls send.
type waiterRecorder struct {
	*memory.Backend
	mu      sync.Mutex
	waiters []string
}

func (w *waiterRecorder) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	w.mu.Lock()
	if n := len(w.waiters); req.Waiter != "" && (n == 0 || w.waiters[n-1] != req.Waiter) {
		w.waiters = append(w.waiters, req.Waiter)
	}
	w.mu.Unlock()
	return w.Backend.Acquire(ctx, req)
}

func (w *waiterRecorder) WatchWaiter(key, waiter string) (<-chan ctxlock.Handoff, func()) {
	return nil, func() {}
}

func (w *waiterRecorder) Leave(ctx context.Context, key, waiter string) error { return nil }

// Waiter ids sort by the time their Lock calls started (a backend of several
// servers orders its queues by them), and begin with that time.
func TestWaiterIDsSortByStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &waiterRecorder{Backend: memory.New()}
		m := ctxlock.NewManager(rec)
		defer closeManager(t, m)
		ctx := context.Background()
		starts := []time.Time{}
		for i := range 3 {
			if i > 0 {
				time.Sleep(time.Duration(i) * time.Second)
			}
			starts = append(starts, time.Now())
			l := m.NewLock("k")
			if _, err := l.Lock(ctx); err != nil {
				t.Fatal(err)
			}
			l.Unlock()
		}
		if len(rec.waiters) != 3 {
			t.Fatalf("waiter ids sent: %q; want one per Lock call", rec.waiters)
		}
		for i, w := range rec.waiters {
			ns, err := strconv.ParseUint(w[:16], 16, 64)
			if err != nil || w[16] != '.' || int64(ns) != starts[i].UnixNano() {
				t.Errorf("waiter id %q; want 16 hex digits of %d (the call's start), then '.'", w, starts[i].UnixNano())
			}
			if i > 0 && w <= rec.waiters[i-1] {
				t.Errorf("waiter id %q does not sort after the earlier call's %q", w, rec.waiters[i-1])
			}
		}
	})
}
