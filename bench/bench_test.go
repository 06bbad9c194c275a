package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Benchmarks of scenarios (a) and (b) for `go test -bench`:
//
//	cd bench && go test -run x -bench . -benchtime=2000x
//
// They start one redis-server on a free loopback port (or use
// CTXLOCK_BENCH_REDIS=host:port) and skip when redis-server is missing.

var (
	benchOnce sync.Once
	benchEnv  *env
	benchSrv  *redisServer
	benchErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if benchEnv != nil {
		benchEnv.close()
	}
	benchSrv.Stop()
	os.Exit(code)
}

func getEnv(b *testing.B) *env {
	benchOnce.Do(func() {
		addr := os.Getenv("CTXLOCK_BENCH_REDIS")
		if addr == "" {
			benchSrv, benchErr = startRedis()
			if benchErr != nil {
				return
			}
			addr = benchSrv.Addr
		}
		benchEnv = newEnv([]string{addr})
	})
	if benchErr != nil {
		b.Skip(benchErr)
	}
	return benchEnv
}

// BenchmarkUncontended: 8 goroutines, one client, distinct keys; one op is
// Lock+Unlock.
func BenchmarkUncontended(b *testing.B) {
	for _, im := range baseImpls(allImpls()) {
		b.Run(im.Name, func(b *testing.B) {
			e := getEnv(b)
			var cnt cmdCounter
			lk, err := im.New(e.addrs, &cnt, 0)
			if err != nil {
				b.Fatal(err)
			}
			defer lk.Close()
			const G = 8
			prefix := uniqueKey("bu")
			var next atomic.Int64
			var wg sync.WaitGroup
			c0, _ := cnt.load()
			b.ResetTimer()
			for g := range G {
				mu := lk.NewMutex(fmt.Sprintf("%s:%d", prefix, g))
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					for next.Add(1) <= int64(b.N) {
						if err := mu.Lock(ctx); err != nil {
							b.Error(err)
							return
						}
						if err := mu.Unlock(ctx); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			c1, _ := cnt.load()
			b.ReportMetric(float64(c1-c0)/float64(b.N), "cmds/op")
		})
	}
}

// BenchmarkContended: 8 contenders, each its own client, on one key; b.N
// acquisitions in all. Reports handoffs/s and commands per acquisition.
func BenchmarkContended(b *testing.B) {
	for _, hold := range []time.Duration{0, time.Millisecond} {
		for _, im := range allImpls() {
			b.Run(fmt.Sprintf("hold=%v/%s", hold, im.Name), func(b *testing.B) {
				e := getEnv(b)
				const G = 8
				var cnt cmdCounter
				key := uniqueKey("bc")
				mus := make([]Mutex, G)
				for i := range mus {
					lk, err := im.New(e.addrs, &cnt, 0)
					if err != nil {
						b.Fatal(err)
					}
					defer lk.Close()
					mus[i] = lk.NewMutex(key)
				}
				var next, last, handoffs atomic.Int64
				last.Store(-1)
				var wg sync.WaitGroup
				c0, _ := cnt.load()
				b.ResetTimer()
				start := time.Now()
				for i := range G {
					wg.Add(1)
					go func() {
						defer wg.Done()
						ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
						defer cancel()
						for next.Add(1) <= int64(b.N) {
							if err := mus[i].Lock(ctx); err != nil {
								b.Error(err)
								return
							}
							if last.Swap(int64(i)) != int64(i) {
								handoffs.Add(1)
							}
							if hold > 0 {
								time.Sleep(hold)
							}
							if err := mus[i].Unlock(ctx); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				el := time.Since(start).Seconds()
				b.StopTimer()
				c1, _ := cnt.load()
				b.ReportMetric(float64(b.N)/el, "acq/s")
				b.ReportMetric(float64(handoffs.Load())/el, "handoffs/s")
				b.ReportMetric(float64(c1-c0)/float64(b.N), "cmds/acq")
			})
		}
	}
}
