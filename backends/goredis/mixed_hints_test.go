package goredis_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// A waiter of one kind of Backend gets a key that a Backend of the other
// kind (with and without WithWaiterHints, as during a rolling upgrade)
// keeps re-locking, on a healthy server: the package doc says the two
// ignore each other's queues, not that one starves the other.
//
// Found by TestChaosCluster. The waiter's refused attempt marks the key
// wanted and queues it in its own kind of queue, which the holder does not
// read; the holder's relock sees the mark and yields, publishing on the
// key's release channel. Before the fix the waiter, which listens on its
// inbox only, slept until its retry at the holder's remaining TTL, while
// the holder took the free key again after its short backoff, and its next
// relocks, with no mark, were atomic: the waiter's retries always found the
// key held. The mark now names the waiter's inbox, and the yield tells it.
func TestMixedHintsWaiterNotStarved(t *testing.T) {
	for _, tc := range []struct {
		name           string
		holder, waiter []goredis.Option
	}{
		{"hinting holder, granting waiter", []goredis.Option{goredis.WithWaiterHints(0)}, nil},
		{"granting holder, hinting waiter", nil, []goredis.Option{goredis.WithWaiterHints(0)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := redistest.StartServer(t)
			holding := ctxlock.NewManager(newBackend(t, s.Client(t), tc.holder...))
			waiting := ctxlock.NewManager(newBackend(t, s.Client(t), tc.waiter...))
			defer waiting.Close(context.Background())
			defer holding.Close(context.Background())

			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // the holder re-locks the key in a loop
				defer wg.Done()
				l := holding.NewLock("k", ctxlock.WithTTL(time.Second))
				for ctx.Err() == nil {
					if _, err := l.Lock(ctx); err != nil {
						continue
					}
					time.Sleep(5 * time.Millisecond) // the hold's work
					_ = l.Unlock()
				}
			}()
			defer func() {
				cancel()
				wg.Wait()
			}()

			l := waiting.NewLock("k", ctxlock.WithTTL(time.Second))
			for i := range 5 {
				start := time.Now()
				lctx, lcancel := context.WithTimeout(ctx, 3*time.Second)
				_, err := l.Lock(lctx)
				lcancel()
				if err != nil {
					t.Fatalf("Lock %d of the waiting Backend: %v after %v, while the other kind re-locks", i, err, time.Since(start))
				}
				_ = l.Unlock()
			}
		})
	}
}
