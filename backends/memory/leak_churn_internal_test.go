package memory

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/churntest"
)

// A service locking many distinct keys, with contention, cancellations,
// TryLocks, Do, lapsed and lost holds, leaves nothing behind once all is
// done: no entry in the store (free, unwatched keys are forgotten), no
// per-key state in the Managers, no goroutine per key.
func TestChurnLeavesNothingBehind(t *testing.T) {
	b := New()
	defer b.Close()
	m := ctxlock.NewManager(b, ctxlock.WithNamespace("svc:"))
	defer m.Close(context.Background())
	m2 := ctxlock.NewManager(b, ctxlock.WithNamespace("svc:"))
	defer m2.Close(context.Background())
	base := runtime.NumGoroutine()

	const nkeys = 900
	churntest.Run(t, m, m2, nkeys, 24, b.Evict)

	churntest.ManagersEmpty(t, 5*time.Second, m, m2)
	churntest.Goroutines(t, 5*time.Second, base, 4) // the schedulers and recorders
	churntest.Eventually(t, 5*time.Second, func() string {
		b.mu.Lock()
		defer b.mu.Unlock()
		now := time.Now()
		held, watched, timers, watcherMaps := 0, 0, 0, 0
		for _, e := range b.keys {
			if e.owner != "" && now.Before(e.expires) {
				held++
			}
			if len(e.watchers) > 0 {
				watched++
			}
			if e.watchers != nil {
				watcherMaps++
			}
			if e.timer != nil {
				timers++
			}
		}
		if held+watched+timers+watcherMaps > 0 || len(b.keys) > 0 {
			return fmt.Sprintf("memory: %d entries, %d held, %d watched, %d timers, %d watcher maps", len(b.keys), held, watched, timers, watcherMaps)
		}
		return ""
	})
}
