package goredis_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// A WithWaiterKeep shorter than ctxlock.MaxRetryDelay (accepted, against
// the option's advice) costs queued waiters their place between retries,
// never mutual exclusion or progress.
func TestWaiterKeepBelowMaxRetryDelay(t *testing.T) {
	s := redistest.StartServer(t)
	ctx := context.Background()
	var inside atomic.Int32
	var wg sync.WaitGroup
	for range 2 {
		m := ctxlock.NewManager(newBackend(t, s.Client(t), goredis.WithWaiterKeep(50*time.Millisecond)))
		t.Cleanup(func() { m.Close(ctx) })
		for range 3 {
			wg.Go(func() {
				l := m.NewLock("short-keep", ctxlock.WithTTL(2*time.Second), ctxlock.WithRetryDelay(300*time.Millisecond))
				for range 5 {
					lctx, cancel := context.WithTimeout(ctx, 20*time.Second)
					_, err := l.Lock(lctx)
					cancel()
					if err != nil {
						t.Errorf("Lock: %v", err)
						return
					}
					if inside.Add(1) != 1 {
						t.Error("two holders at once")
					}
					time.Sleep(20 * time.Millisecond) // holding the lock
					inside.Add(-1)
					if err := l.Unlock(); err != nil {
						t.Errorf("Unlock: %v", err)
					}
				}
			})
		}
	}
	wg.Wait()
}
