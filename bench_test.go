package ctxlock_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// BenchmarkLockUnlock is one goroutine locking and unlocking one key on the
// in-memory backend: the library's own overhead per hold.
func BenchmarkLockUnlock(b *testing.B) {
	m := ctxlock.NewManager(memory.New())
	defer m.Close(context.Background())
	l := m.NewLock("bench")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Lock(ctx); err != nil {
			b.Fatal(err)
		}
		if err := l.Unlock(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLockUnlockParallel locks and unlocks distinct keys from
// GOMAXPROCS goroutines on one Manager.
func BenchmarkLockUnlockParallel(b *testing.B) {
	m := ctxlock.NewManager(memory.New())
	defer m.Close(context.Background())
	var n atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		l := m.NewLock(fmt.Sprint("bench-", n.Add(1)))
		ctx := context.Background()
		for pb.Next() {
			if _, err := l.Lock(ctx); err != nil {
				b.Error(err)
				return
			}
			l.Unlock()
		}
	})
}

// BenchmarkContended8 is 8 goroutines, each with its own Lock value, taking
// turns on one key in one Manager. It reports handoffs/s: holds whose holder
// differs from the previous one.
func BenchmarkContended8(b *testing.B) {
	benchContended(b, 1)
}

// BenchmarkContended8Managers is the same with every goroutine in its own
// Manager (processes, in effect), woken by the backend's release notification.
func BenchmarkContended8Managers(b *testing.B) {
	benchContended(b, 8)
}

func benchContended(b *testing.B, managers int) {
	backend := memory.New()
	ms := make([]*ctxlock.Manager, managers)
	for i := range ms {
		ms[i] = ctxlock.NewManager(backend)
	}
	defer func() {
		for _, m := range ms {
			m.Close(context.Background())
		}
	}()
	const G = 8
	var (
		next     atomic.Int64
		last     atomic.Int64
		handoffs atomic.Int64
		wg       sync.WaitGroup
	)
	total := int64(b.N)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for g := 0; g < G; g++ {
		l := ms[g%managers].NewLock("hot")
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for next.Add(1) <= total {
				if _, err := l.Lock(ctx); err != nil {
					b.Error(err)
					return
				}
				if last.Swap(int64(g)) != int64(g) {
					handoffs.Add(1)
				}
				l.Unlock()
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	b.ReportMetric(float64(b.N)/el, "acquisitions/s")
	b.ReportMetric(float64(handoffs.Load())/el, "handoffs/s")
}

// BenchmarkHeld100k holds 100,000 locks with refresh on and reports the
// goroutines the library runs and the heap it uses per held lock: the Lock
// value, the hold, and the backend's entry (the benchmark's own key strings
// and slice are made before measuring).
func BenchmarkHeld100k(b *testing.B) {
	const n = 100_000
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprint("held-", i)
	}
	locks := make([]ctxlock.Lock, n)
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		g0 := runtime.NumGoroutine()
		backend := memory.New()
		m := ctxlock.NewManager(backend)
		ctx := context.Background()
		for i := range locks {
			locks[i] = m.NewLock(keys[i], ctxlock.WithTTL(time.Minute))
			if _, err := locks[i].Lock(ctx); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(runtime.NumGoroutine()-g0), "goroutines")
		b.ReportMetric((float64(after.HeapAlloc)-float64(before.HeapAlloc))/n, "heapB/lock")
		for _, l := range locks {
			l.Unlock()
		}
		m.Close(ctx)
		clear(locks) // the next round measures from an empty heap again
	}
}
