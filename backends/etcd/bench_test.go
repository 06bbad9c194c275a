package etcd_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
)

// BenchmarkLockUnlock locks and unlocks distinct keys from 8 goroutines on
// one Manager over a throwaway member (data on /dev/shm): what one process
// gets from the backend's grant-and-transaction acquire and revoking
// release.
//
//	cd backends/etcd && go test -run '^$' -bench . -benchtime 3s
func BenchmarkLockUnlock(b *testing.B) {
	_, client := start(b)
	m := ctxlock.NewManager(newBackend(b, client))
	defer m.Close(context.Background())
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

// BenchmarkContended has 4 Managers (processes, each with its own client and
// watch) take turns on one key, each hold released at once. It reports
// hand-offs per second: holds whose Manager differs from the previous
// holder's (each one a deletion seen by the watch and a waiter's acquire),
// and min/max: the fewest acquisitions of one Manager over the most.
func BenchmarkContended(b *testing.B) {
	s, _ := start(b)
	const managers = 4
	var ms []*ctxlock.Manager
	for range managers {
		m := ctxlock.NewManager(newBackend(b, newClient(b, s.Addr())),
			ctxlock.WithDefaultLockOptions(ctxlock.WithAcquireTimeout(time.Second)))
		defer m.Close(context.Background())
		ms = append(ms, m)
	}
	var (
		left     atomic.Int64
		last     atomic.Int64
		handoffs atomic.Int64
		per      [managers]atomic.Int64
		wg       sync.WaitGroup
	)
	left.Store(int64(b.N))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b.ResetTimer()
	start := time.Now()
	for i, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
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
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(handoffs.Load())/time.Since(start).Seconds(), "handoffs/s")
	lo, hi := per[0].Load(), per[0].Load()
	for i := range per {
		lo, hi = min(lo, per[i].Load()), max(hi, per[i].Load())
	}
	b.ReportMetric(float64(lo)/float64(max(hi, 1)), "min/max")
}
