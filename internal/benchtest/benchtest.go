// Package benchtest has the benchmark loops that every networked backend
// runs the same way (backends/postgres, backends/etcd), so that their
// numbers compare.
package benchtest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
)

// LockUnlock locks and unlocks distinct keys from 8 goroutines (on 2
// cores) on one Manager: what one process gets from its backend.
func LockUnlock(b *testing.B, m *ctxlock.Manager) {
	var n atomic.Int64
	b.SetParallelism(4) // 8 goroutines on 2 cores
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		l := m.NewLock(fmt.Sprint("bench-", n.Add(1)))
		ctx := context.Background()
		for pb.Next() {
			if _, err := l.Lock(ctx); err != nil {
				b.Error(err)
				return
			}
			_ = l.Unlock()
		}
	})
}

// Contended has the Managers (processes, each with its own backend) take
// turns on one key, each hold released at once, b.N acquisitions in all.
// It reports hand-offs per second (holds whose Manager differs from the
// previous holder's) and min/max (the fewest acquisitions of one Manager
// over the most).
func Contended(b *testing.B, ms []*ctxlock.Manager) {
	var (
		left     atomic.Int64
		last     atomic.Int64
		handoffs atomic.Int64
		per      = make([]atomic.Int64, len(ms))
		wg       sync.WaitGroup
	)
	left.Store(int64(b.N))
	last.Store(-1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b.ResetTimer()
	start := time.Now()
	for i, m := range ms {
		wg.Go(func() {
			l := m.NewLock("contended")
			for left.Add(-1) >= 0 {
				if _, err := l.Lock(ctx); err != nil {
					b.Error(err)
					return
				}
				per[i].Add(1)
				if last.Swap(int64(i)) != int64(i) {
					handoffs.Add(1)
				}
				_ = l.Unlock()
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(handoffs.Load())/time.Since(start).Seconds(), "handoffs/s")
	lo, hi := per[0].Load(), per[0].Load()
	for i := range per {
		lo, hi = min(lo, per[i].Load()), max(hi, per[i].Load())
	}
	b.ReportMetric(float64(lo)/float64(max(hi, 1)), "min/max")
}
