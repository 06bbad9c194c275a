package goredis

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/churntest"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// hubSizes: entries, entries with watchers, waiters.
func hubSizes(h *hub) (entries, watched, waiters int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.entries {
		if len(e.watchers) > 0 {
			watched++
		}
	}
	return len(h.entries), watched, len(h.waiters)
}

// A service locking many distinct keys, with contention, cancellations,
// TryLocks, Do and lapsed holds, leaves nothing behind once all is done: no
// per-key state in the Managers, no watcher in the Backend's hub (idle
// channels at most maxIdleChannels, lingering), no call in the batcher, no
// goroutine per key, and in Redis only the fencing counters once the waiter
// queues and wanted marks have expired.
func TestChurnLeavesNothingBehind(t *testing.T) {
	for _, hints := range []bool{false, true} {
		t.Run(fmt.Sprintf("hints=%v", hints), func(t *testing.T) {
			s := redistest.StartServer(t, redistest.WithArgs("--notify-keyspace-events", "Ex"))
			c := s.Client(t)
			opts := []Option{WithWaiterKeep(300 * time.Millisecond), WithExpiryNotifications()}
			if hints {
				opts = append(opts, WithWaiterHints(50*time.Millisecond))
			}
			b := New(c, opts...)
			defer b.Close()
			m := ctxlock.NewManager(b, ctxlock.WithNamespace("svc:"))
			defer m.Close(context.Background())
			m2 := ctxlock.NewManager(b, ctxlock.WithNamespace("svc:"))
			defer m2.Close(context.Background())
			base := runtime.NumGoroutine()

			const nkeys = 400
			churntest.Run(t, m, m2, nkeys, 16, func(key string) {
				lk, _, _ := b.Keys(key)
				c.Del(context.Background(), lk)
			})

			churntest.ManagersEmpty(t, 5*time.Second, m, m2)
			churntest.Eventually(t, 5*time.Second, func() string {
				n, watched, waiters := hubSizes(b.hub)
				if watched > 0 || waiters > 0 || n > maxIdleChannels+1 {
					return fmt.Sprintf("hub: %d entries, %d watched, %d waiters", n, watched, waiters)
				}
				return ""
			})
			churntest.Eventually(t, 5*time.Second, func() string {
				b.batch.mu.Lock()
				defer b.batch.mu.Unlock()
				if q := len(b.batch.lone.queue); q > 0 || b.batch.lone.inflight != nil || len(b.batch.lanes) > 0 {
					return fmt.Sprintf("batcher: %d queued, inflight %v, %d lanes", q, b.batch.lone.inflight != nil, len(b.batch.lanes))
				}
				return ""
			})
			// The scheduler, the recorder and the hub's two goroutines may stay.
			churntest.Goroutines(t, 5*time.Second, base, 5)
			// 2*keep for the queues, the TTL (1s) at most for wanted marks
			// and lapsed leases.
			if fences := churntest.RedisOnlyFences(t, 10*time.Second, c); fences < nkeys {
				t.Errorf("%d fencing counters, want at least %d", fences, nkeys)
			}
		})
	}
}
