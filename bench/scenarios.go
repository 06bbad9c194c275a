package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// env is where a measurement runs: the servers' addresses and one
// uncounted client per server for INFO.
type env struct {
	addrs []string
	info  []*redis.Client
}

func newEnv(addrs []string) *env {
	e := &env{addrs: addrs}
	for _, a := range addrs {
		e.info = append(e.info, redis.NewClient(&redis.Options{Addr: a}))
	}
	return e
}

func (e *env) close() {
	for _, c := range e.info {
		c.Close()
	}
}

var keySeq atomic.Int64

func uniqueKey(prefix string) string { return fmt.Sprintf("bench:%s:%d", prefix, keySeq.Add(1)) }

// ---- (a) uncontended ----

type uncontended struct {
	Ops          int64
	OpsPerSec    float64
	P50, P99     time.Duration
	CmdsPerOp    float64 // sent by the client
	RTsPerOp     float64 // round trips (go-redis hook; -1 for rueidis)
	SrvCmdsPerOp float64 // INFO commandstats, Lua-internal calls included
	ClientCPU    float64 // µs of this process's CPU (user+sys, getrusage) per op
	ServerCPU    float64 // µs of the servers' CPU (INFO cpu) per op
	Errors       int64
	Stalls       int64 // Lock calls that took over a second on an uncontended key
}

// runUncontended: one client (Locker), g goroutines, each on its own key,
// Lock+Unlock in a loop for d. An op is one Lock plus one Unlock.
func runUncontended(e *env, impl Impl, g int, d time.Duration) (uncontended, error) {
	var cnt cmdCounter
	lk, err := impl.New(e.addrs, &cnt, 0)
	if err != nil {
		return uncontended{}, err
	}
	defer lk.Close()
	prefix := uniqueKey("u")
	mus := make([]Mutex, g)
	for i := range mus {
		mus[i] = lk.NewMutex(fmt.Sprintf("%s:%d", prefix, i))
		// Warm up: connections, scripts.
		if err := mus[i].Lock(context.Background()); err != nil {
			return uncontended{}, fmt.Errorf("warm-up: %w", err)
		}
		_ = mus[i].Unlock(context.Background())
	}
	c0, rt0 := cnt.load()
	s0 := serverCalls(e.info)
	cpu0, srvCPU0 := processCPU(), serverCPU(e.info)
	lat := make([][]time.Duration, g)
	var errs, stalls atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	// Lock calls are bounded by the window: a call that never returns (a
	// lost wake-up) must not hang the harness; it shows up as a stall.
	ctx, cancel := context.WithDeadline(context.Background(), end)
	defer cancel()
	for i := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := make([]time.Duration, 0, 4096)
			for {
				t0 := time.Now()
				if !t0.Before(end) {
					break
				}
				err := mus[i].Lock(ctx)
				if time.Since(t0) > time.Second {
					stalls.Add(1)
				}
				if err != nil {
					if ctx.Err() == nil {
						errs.Add(1)
					}
					continue
				}
				if err := mus[i].Unlock(context.Background()); err != nil {
					errs.Add(1)
				}
				l = append(l, time.Since(t0))
			}
			lat[i] = l
		}()
	}
	wg.Wait()
	el := time.Since(start)
	cpu1, srvCPU1 := processCPU(), serverCPU(e.info)
	c1, rt1 := cnt.load()
	s1 := serverCalls(e.info)
	all := slices.Concat(lat...)
	slices.Sort(all)
	n := int64(len(all))
	r := uncontended{Ops: n, OpsPerSec: float64(n) / el.Seconds(), P50: percentile(all, .5), P99: percentile(all, .99), Errors: errs.Load(), Stalls: stalls.Load()}
	if n > 0 {
		r.CmdsPerOp = float64(c1-c0) / float64(n)
		r.RTsPerOp = float64(rt1-rt0) / float64(n)
		if rt1 == rt0 {
			r.RTsPerOp = math.NaN()
		}
		r.SrvCmdsPerOp = float64(s1-s0) / float64(n)
		r.ClientCPU = float64((cpu1 - cpu0).Microseconds()) / float64(n)
		r.ServerCPU = float64((srvCPU1 - srvCPU0).Microseconds()) / float64(n)
	}
	return r, nil
}

// ---- (b) contended ----

type contended struct {
	Acq, Handoffs             int64
	AcqPerSec, HandoffPerSec  float64
	WaitP50, WaitP99, WaitMax time.Duration
	MinMax                    float64       // min/max acquisitions per contender
	HoldP50                   time.Duration // how long a hold of H really took
	GapP50                    time.Duration // an Unlock call to the next Lock's return
	CmdsPerAcq                float64       // sent by the clients
	SrvCmdsPerAcq             float64       // INFO commandstats, Lua-internal calls included
	Overlaps                  int64         // mutual-exclusion violations seen (must be 0)
	Errors                    int64
}

// runContended: g contenders, each its own Locker (client), on one key,
// holding for hold each time, for d.
func runContended(e *env, impl Impl, g int, hold, d time.Duration) (contended, error) {
	var cnt cmdCounter
	key := uniqueKey("c")
	lks := make([]Locker, 0, g)
	defer func() {
		for _, lk := range lks {
			lk.Close()
		}
	}()
	mus := make([]Mutex, g)
	for i := range g {
		lk, err := impl.New(e.addrs, &cnt, 0)
		if err != nil {
			return contended{}, err
		}
		lks = append(lks, lk)
		mus[i] = lk.NewMutex(key)
		// Warm up each client (connection, scripts) on a private key.
		wm := lk.NewMutex(uniqueKey("w"))
		if err := wm.Lock(context.Background()); err != nil {
			return contended{}, fmt.Errorf("warm-up: %w", err)
		}
		_ = wm.Unlock(context.Background())
	}
	c0, _ := cnt.load()
	by0 := serverCallsBy(e.info)
	s0 := serverCalls(e.info)
	var (
		holding, last            atomic.Int64
		handoffs, overlaps, errs atomic.Int64
		unlocked                 atomic.Int64 // when the latest Unlock call was made, since start
		wg                       sync.WaitGroup
	)
	last.Store(-1)
	counts := make([]int64, g)
	waits := make([][]time.Duration, g)
	gaps := make([][]time.Duration, g)
	holds := make([][]time.Duration, g)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	for i := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var w, gap, held []time.Duration
			for ctx.Err() == nil {
				t0 := time.Now()
				if err := mus[i].Lock(ctx); err != nil {
					if ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
						errs.Add(1)
					}
					continue
				}
				t1 := time.Now()
				w = append(w, t1.Sub(t0))
				if u := unlocked.Load(); u != 0 {
					gap = append(gap, t1.Sub(start)-time.Duration(u))
				}
				if holding.Add(1) != 1 {
					overlaps.Add(1)
				}
				if last.Swap(int64(i)) != int64(i) {
					handoffs.Add(1)
				}
				counts[i]++
				if hold > 0 {
					time.Sleep(hold)
				}
				held = append(held, time.Since(t1))
				holding.Add(-1)
				unlocked.Store(int64(time.Since(start)))
				if err := mus[i].Unlock(context.Background()); err != nil {
					errs.Add(1)
				}
			}
			waits[i], gaps[i], holds[i] = w, gap, held
		}()
	}
	wg.Wait()
	el := time.Since(start)
	c1, _ := cnt.load()
	s1 := serverCalls(e.info)
	if *verbose {
		var acq int64
		for _, c := range counts {
			acq += c
		}
		progress("    %s hold %v: server calls per acquisition: %s", impl.Name, hold, diffCalls(by0, serverCallsBy(e.info), acq))
	}
	all, allGaps, allHolds := slices.Concat(waits...), slices.Concat(gaps...), slices.Concat(holds...)
	slices.Sort(all)
	slices.Sort(allGaps)
	slices.Sort(allHolds)
	var acq int64
	mn, mx := counts[0], counts[0]
	for _, c := range counts {
		acq += c
		mn, mx = min(mn, c), max(mx, c)
	}
	r := contended{
		Acq: acq, Handoffs: handoffs.Load(),
		AcqPerSec: float64(acq) / el.Seconds(), HandoffPerSec: float64(handoffs.Load()) / el.Seconds(),
		WaitP50: percentile(all, .5), WaitP99: percentile(all, .99), WaitMax: percentile(all, 1),
		HoldP50: percentile(allHolds, .5), GapP50: percentile(allGaps, .5),
		Overlaps: overlaps.Load(), Errors: errs.Load(),
	}
	if mx > 0 {
		r.MinMax = float64(mn) / float64(mx)
	}
	if acq > 0 {
		r.CmdsPerAcq = float64(c1-c0) / float64(acq)
		r.SrvCmdsPerAcq = float64(s1-s0) / float64(acq)
	}
	return r, nil
}

// ---- (c) scale ----

type scale struct {
	N              int
	AcquireSecs    float64
	Goroutines     int     // goroutines added while holding N locks
	HeapPerLock    float64 // bytes of heap per held lock
	HeapStackPerLk float64 // heap + goroutine stacks per held lock
	RefreshCmdsSec float64 // client commands/s while only holding (refresh traffic)
	LeasesPerRT    float64 // refresh commands per round trip (go-redis clients only; NaN otherwise)
	Lost           int
}

func memNow() (heap, stack uint64) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, m.StackInuse
}

// acquireBudget bounds the acquire phase of (c).
const acquireBudget = 40 * time.Second

// runScale: one client holds n locks with auto-refresh for holdFor.
func runScale(e *env, impl Impl, n int, ttl, holdFor time.Duration, workers int) (scale, error) {
	r := scale{N: n}
	var cnt cmdCounter
	g0 := runtime.NumGoroutine()
	h0, st0 := memNow()
	lk, err := impl.New(e.addrs, &cnt, ttl)
	if err != nil {
		return r, err
	}
	var firstErr error
	defer func() {
		if firstErr == nil {
			lk.Close()
		}
	}()
	prefix := uniqueKey("s")
	releases := make([]func(), n)
	losts := make([]func() bool, n)
	var next atomic.Int64
	var errOnce sync.Once
	var wg sync.WaitGroup
	t0 := time.Now()
	// One deadline for the whole acquire phase keeps the harness bounded
	// when an implementation cannot keep up (refresh traffic of the locks
	// already held starves the acquires).
	actx, acancel := context.WithTimeout(context.Background(), acquireBudget)
	defer acancel()
	var acquired atomic.Int64
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				rel, lost, err := lk.Hold(actx, fmt.Sprintf("%s:%d", prefix, i))
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					next.Store(int64(n))
					return
				}
				releases[i], losts[i] = rel, lost
				acquired.Add(1)
			}
		}()
	}
	wg.Wait()
	r.AcquireSecs = time.Since(t0).Seconds()
	defer func() {
		if firstErr != nil {
			// The implementation could not keep up: close its client first,
			// so that the releases below fail fast instead of queueing
			// behind the refresh storm (leases lapse at their TTL).
			lk.Close()
		}
		var wg sync.WaitGroup
		var next atomic.Int64
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
					if releases[i] != nil {
						releases[i]()
					}
				}
			}()
		}
		wg.Wait()
	}()
	if firstErr != nil {
		return r, fmt.Errorf("acquired %d of %d in %.0fs: %w", acquired.Load(), n, time.Since(t0).Seconds(), firstErr)
	}
	h1, st1 := memNow()
	if *memprofile != "" && impl.Name == *memprofImpl {
		writeHeapProfile(fmt.Sprintf("%s.%s.%d", *memprofile, impl.Name, n))
	}
	r.Goroutines = runtime.NumGoroutine() - g0
	r.HeapPerLock = (float64(h1) - float64(h0)) / float64(n)
	r.HeapStackPerLk = (float64(h1+st1) - float64(h0+st0)) / float64(n)

	c0, rt0 := cnt.load()
	t1 := time.Now()
	time.Sleep(holdFor)
	el := time.Since(t1)
	c1, rt1 := cnt.load()
	r.RefreshCmdsSec = float64(c1-c0) / el.Seconds()
	r.LeasesPerRT = float64(c1-c0) / float64(rt1-rt0)
	if rt1 == rt0 {
		r.LeasesPerRT = -1 // no go-redis hook (rueidis): unknown
	}
	for _, l := range losts {
		if l != nil && l() {
			r.Lost++
		}
	}
	return r, nil
}
