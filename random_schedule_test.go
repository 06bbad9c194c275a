package ctxlock_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// TestRandomSchedules is a model-checked bug hunt: for each seed it builds
// 2–3 Managers on ONE memory backend, several Lock values on 2–3 keys (some
// keys shared by Managers, one Lock value used by two goroutines at once),
// and drives random Lock / TryLock / Unlock / Do calls with random contexts
// and options while the store goes unavailable and slow for random windows
// and Managers close at random points. Every hold is recorded (from the
// holder's view: acquire return .. expiry channel close) and checked against
// DESIGN §1 and §3: no two holds of a key overlap, fencing tokens increase
// per key, the backend holds the lease while the holder's channel is open,
// Err/Token/Unlock agree with the hold's state, Lock's errors match its
// context, Close ends every hold, and every key is acquirable at the end.
//
// Each seed runs in its own synctest bubble (fake time), so a schedule's
// random choices are the same for a seed on every run; goroutine
// interleavings within one instant of fake time are up to the Go scheduler.
//
// CTXLOCK_MODEL_SEEDS=n runs n seeds (default 24, 8 with -short);
// CTXLOCK_MODEL_SEED=s runs seed s alone; CTXLOCK_MODEL_TRACE=1 logs each
// seed's trace even when it passes.
func TestRandomSchedules(t *testing.T) {
	// Seed 211 once made Close hang (about one run in 100 under -race): a
	// job the scheduler could not hand to a busy worker was never
	// dispatched, because the worker woke it before freeing its slot.
	runSeeds(t, modelMemory, 24, 8, 211)
}

// runSeeds runs the model on kind for seeds 1..n (short in -short mode),
// then the extra ones; CTXLOCK_MODEL_SEEDS sets n, CTXLOCK_MODEL_SEED runs
// that seed alone. Each seed runs in its own synctest bubble.
func runSeeds(t *testing.T, kind modelKind, n, short int, extra ...uint64) {
	if testing.Short() {
		n = short
	}
	if v := os.Getenv("CTXLOCK_MODEL_SEEDS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			t.Fatalf("CTXLOCK_MODEL_SEEDS=%q: %v", v, err)
		}
	}
	seeds := make([]uint64, n, n+len(extra))
	for i := range seeds {
		seeds[i] = uint64(i + 1)
	}
	seeds = append(seeds, extra...)
	if v := os.Getenv("CTXLOCK_MODEL_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("CTXLOCK_MODEL_SEED=%q: %v", v, err)
		}
		seeds = []uint64{s}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { runModel(t, seed, kind) })
		})
	}
}

// mhold is one recorded hold.
type mhold struct {
	id      int
	key     int
	mgr     int
	lock    int
	token   uint64 // 0: not known (the hold ended before Token could be read)
	start   time.Time
	from    time.Time       // when the call that made the hold began
	end     time.Time       // zero until the hold is seen to end
	expired <-chan struct{} // nil for a hold of Do (its end is fn's view)
	viaDo   bool
	// For WithoutRefresh holds: the channel must close by start+validity.
	noRefresh bool
	validity  time.Duration
}

type mlock struct {
	idx       int
	l         ctxlock.Lock
	mgr, key  int
	shared    bool // used by two goroutines
	invalid   bool
	noRefresh bool
	ttl       time.Duration
	validity  time.Duration // TTL - drift allowance
	desc      string
}

type model struct {
	t     *testing.T
	seed  uint64
	t0    time.Time
	store modelStore
	// wq: the store is a wqBackend (server-side waiter queue, hand-off),
	// with evictions.
	wq        bool
	wqCfg     wqConfig
	evictions []mevict // guarded by mu
	mgrs      []*ctxlock.Manager
	// closing[i]: Close of mgrs[i] has begun.
	closing  []atomic.Bool
	closedAt []time.Time // guarded by mu: when Close returned
	locks    []*mlock
	keys     []string
	maxTTL   time.Duration

	mu         sync.Mutex
	holds      []*mhold
	trace      []string
	violations []string
	reasons    map[string]int
	done       chan struct{}
	watchers   sync.WaitGroup
	closeErrs  int
	// degraded are the windows in which the store was unavailable or slow.
	degraded    [][2]time.Time
	degradedAt  time.Time // start of the current window, if any
	failedWaits []failedWait
	maxGap      time.Duration
	mgrCloseErr []bool
}

// modelStore is the backend under the model: memory.Backend or wqBackend.
type modelStore interface {
	ctxlock.Backend
	SetUnavailable(down bool)
	SetLatency(d time.Duration)
	Evict(key string)
	Holder(key string) (owner, metadata string, token uint64, remaining time.Duration, ok bool)
}

// mevict is an eviction of a key's lease (data loss).
type mevict struct {
	key   int
	token uint64 // the evicted lease's
	at    time.Time
}

// evictedLocked returns the eviction of h's lease (by its token), if any;
// for a hold of unknown token, the first eviction of its key at or after
// from (the start of the call that made h: its lease may be evicted before
// the call returns) and before h ended.
func (m *model) evictedLocked(h *mhold) (time.Time, bool) {
	for _, ev := range m.evictions {
		if ev.key != h.key {
			continue
		}
		if h.token != 0 {
			if ev.token == h.token {
				return ev.at, true
			}
			continue
		}
		if !ev.at.Before(h.from) && (h.end.IsZero() || !ev.at.After(h.end)) {
			return ev.at, true
		}
	}
	return time.Time{}, false
}

// failedWait is a Lock call that gave up when its context ended.
type failedWait struct {
	g, lock, key, mgr int
	start, end        time.Time
}

// setDegraded records the store's state (unavailable or slow).
func (m *model) setDegraded(on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	switch {
	case on && m.degradedAt.IsZero():
		m.degradedAt = now
	case !on && !m.degradedAt.IsZero():
		m.degraded = append(m.degraded, [2]time.Time{m.degradedAt, now})
		m.degradedAt = time.Time{}
	}
}

func (m *model) now() time.Duration { return time.Since(m.t0) }

func (m *model) logf(format string, args ...any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.logLocked(format, args...)
}

func (m *model) logLocked(format string, args ...any) {
	m.trace = append(m.trace, fmt.Sprintf("%10v ", m.now())+fmt.Sprintf(format, args...))
}

func (m *model) failf(format string, args ...any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failLocked(format, args...)
}

func (m *model) failLocked(format string, args ...any) {
	msg := fmt.Sprintf("%v: ", m.now()) + fmt.Sprintf(format, args...)
	m.violations = append(m.violations, msg)
	m.logLocked("VIOLATION %s", msg)
}

func isOpen(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return false
	default:
		return true
	}
}

func (m *model) fullKey(k int) string { return "ns:" + m.keys[k] }

// register records a hold that a Lock or TryLock (expired non-nil) or Do
// (expired nil) call just returned, and checks it against the others.
func (m *model) register(g int, ml *mlock, from time.Time, expired <-chan struct{}, token uint64, viaDo bool) *mhold {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := &mhold{
		id: len(m.holds), key: ml.key, mgr: ml.mgr, lock: ml.idx, token: token,
		start: time.Now(), from: from, expired: expired, viaDo: viaDo,
		noRefresh: ml.noRefresh, validity: ml.validity,
	}
	how := "Lock"
	if viaDo {
		how = "Do"
	}
	m.logLocked("g%d %s L%d(m%d,%s) acquired hold #%d token %d", g, how, ml.idx, ml.mgr, m.keys[ml.key], h.id, token)
	_, hEvicted := m.evictedLocked(h)
	if expired != nil && isOpen(expired) && !hEvicted {
		for _, o := range m.holds {
			if _, ev := m.evictedLocked(o); ev {
				continue // data loss: its lease is gone, its holder finds out later
			}
			if o.key == h.key && o.expired != nil && isOpen(o.expired) {
				m.failLocked("atomicity: hold #%d (L%d m%d token %d) acquired while hold #%d (L%d m%d token %d) of key %s is still open",
					h.id, h.lock, h.mgr, h.token, o.id, o.lock, o.mgr, o.token, m.keys[h.key])
			}
		}
		if token != 0 && !hEvicted {
			_, _, btok, _, ok := m.store.Holder(m.fullKey(h.key))
			if isOpen(expired) && (!ok || btok != token) {
				m.failLocked("hold #%d token %d open, but the backend holder of %s is token %d (held %v)", h.id, token, m.keys[h.key], btok, ok)
			}
		}
	}
	if token != 0 {
		for _, o := range m.holds {
			if o.key == h.key && o.token == token {
				m.failLocked("fencing: holds #%d and #%d of %s have the same token %d", o.id, h.id, m.keys[h.key], token)
			}
		}
	}
	m.holds = append(m.holds, h)
	if expired != nil {
		m.watchers.Add(1)
		go func() {
			defer m.watchers.Done()
			select {
			case <-expired:
				m.mu.Lock()
				h.end = time.Now()
				m.logLocked("hold #%d (L%d) ended", h.id, h.lock)
				m.mu.Unlock()
			case <-m.done:
			}
		}()
	}
	return h
}

// monitor checks, now and then, that every open hold's lease is on the
// backend under its token: a lease gone from the store while its holder's
// channel is open could be taken by anyone.
func (m *model) monitor(rng *rand.Rand, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(time.Duration(1+rng.IntN(20)) * time.Millisecond):
		}
		m.mu.Lock()
		for _, h := range m.holds {
			if h.expired == nil || h.token == 0 || !isOpen(h.expired) {
				continue
			}
			if _, ev := m.evictedLocked(h); ev {
				continue
			}
			_, _, tok, rem, ok := m.store.Holder(m.fullKey(h.key))
			if isOpen(h.expired) && (!ok || tok != h.token) {
				m.failLocked("liveness B: hold #%d (L%d token %d) open, but the backend has %s: token %d held %v (remaining %v)",
					h.id, h.lock, h.token, m.keys[h.key], tok, ok, rem)
			}
		}
		m.mu.Unlock()
	}
}

func pick[T any](rng *rand.Rand, xs ...T) T { return xs[rng.IntN(len(xs))] }

func randDur(rng *rand.Rand, max time.Duration) time.Duration {
	return time.Duration(rng.Int64N(int64(max) + 1))
}

// lockOptions picks random options for a Lock (now and then an invalid set).
func lockOptions(rng *rand.Rand) (opts []ctxlock.LockOption, o ctxlock.LockOptions, desc string) {
	o = *ctxlock.DefaultLockOptions()
	var parts []string
	add := func(opt ctxlock.LockOption, d string) {
		opts = append(opts, opt)
		o.Apply(opt)
		parts = append(parts, d)
	}
	if rng.IntN(5) > 0 {
		ttl := pick(rng, 20*time.Millisecond, 50*time.Millisecond, 200*time.Millisecond, time.Second, 3*time.Second)
		add(ctxlock.WithTTL(ttl), "ttl="+ttl.String())
	}
	if rng.IntN(3) == 0 {
		f := pick(rng, 0, 0.05, 0.2, 0.4)
		add(ctxlock.WithDriftFactor(f), fmt.Sprint("drift=", f))
	}
	if rng.IntN(3) == 0 {
		d := pick(rng, time.Millisecond, 5*time.Millisecond, 50*time.Millisecond)
		add(ctxlock.WithRetryDelay(d), "retry="+d.String())
	}
	if rng.IntN(3) == 0 {
		d := pick(rng, 5*time.Millisecond, 20*time.Millisecond, 300*time.Millisecond)
		add(ctxlock.WithAcquireTimeout(d), "acqto="+d.String())
	}
	switch rng.IntN(5) {
	case 0:
		add(ctxlock.WithoutRefresh(), "norefresh")
	case 1:
		// A random interval within the validity window.
		win := o.TTL - time.Duration(float64(o.TTL)*o.DriftFactor) - 2*time.Millisecond
		if win > 4 {
			ri := win/8 + randDur(rng, win*3/4)
			add(ctxlock.WithRefreshInterval(ri), "refresh="+ri.String())
		}
	}
	if rng.IntN(25) == 0 {
		add(ctxlock.WithTTL(0), "ttl=0(invalid)")
	}
	return opts, o, strings.Join(parts, ",")
}

// modelKind is the backend under the model.
type modelKind int

const (
	modelMemory      modelKind = iota // memory.Backend
	modelWaiterQueue                  // wqBackend, granting (goredis)
	modelWaiterHints                  // wqBackend, hinting (goredis.WithWaiterHints, redlock's nodes)
)

func runModel(t *testing.T, seed uint64, kind modelKind) {
	wq := kind != modelMemory
	rng := rand.New(rand.NewPCG(seed, 0x6d6f64656c))
	m := &model{
		t: t, seed: seed, t0: time.Now(), wq: wq,
		reasons: map[string]int{}, done: make(chan struct{}),
	}
	if wq {
		m.wqCfg = randomWQConfig(rand.New(rand.NewPCG(seed, 5)))
		if kind == modelWaiterHints {
			m.wqCfg.hintWindow = pick(rand.New(rand.NewPCG(seed, 6)), time.Millisecond, 50*time.Millisecond, 50*time.Millisecond, 300*time.Millisecond)
		}
		wb := newWQBackend(m.wqCfg, seed)
		wb.t0 = m.t0
		m.store = wb
		m.logf("wq backend: %v", m.wqCfg)
	} else {
		m.store = memory.New()
	}
	defer m.store.Close()
	nMgr := 2 + rng.IntN(2)
	nKeys := 2 + rng.IntN(2)
	if wq {
		// Fewer keys, more Managers: hand-offs need contention between
		// Managers.
		nMgr, nKeys = nMgr+rng.IntN(2), nKeys-1
	}
	for k := range nKeys {
		m.keys = append(m.keys, fmt.Sprintf("k%d", k))
	}
	for range nMgr {
		var mopts []ctxlock.ManagerOption
		mopts = append(mopts, ctxlock.WithNamespace("ns:"))
		if rng.IntN(3) == 0 {
			mopts = append(mopts, ctxlock.WithWorkers(1+rng.IntN(2)))
		}
		m.mgrs = append(m.mgrs, ctxlock.NewManager(m.store, mopts...))
	}
	m.closing = make([]atomic.Bool, nMgr)
	m.closedAt = make([]time.Time, nMgr)

	nWorkers := 3 + rng.IntN(3)
	// Each worker has 1–2 Lock values of its own; one Lock value is shared by
	// workers 0 and 1.
	owned := make([][]*mlock, nWorkers)
	newLock := func(shared bool) *mlock {
		opts, o, desc := lockOptions(rng)
		ml := &mlock{idx: len(m.locks), mgr: rng.IntN(nMgr), key: rng.IntN(nKeys), shared: shared, desc: desc}
		ml.l = m.mgrs[ml.mgr].NewLock(m.keys[ml.key], opts...)
		ml.invalid = o.Validate() != nil
		ml.noRefresh = o.NoRefresh
		ml.ttl = o.TTL
		ml.validity = o.TTL - (time.Duration(float64(o.TTL)*o.DriftFactor) + 2*time.Millisecond)
		if !ml.invalid && o.TTL > m.maxTTL {
			m.maxTTL = o.TTL
		}
		m.locks = append(m.locks, ml)
		m.logf("L%d: m%d key %s shared=%v %s invalid=%v", ml.idx, ml.mgr, m.keys[ml.key], shared, desc, ml.invalid)
		return ml
	}
	for g := range nWorkers {
		for range 1 + rng.IntN(2) {
			owned[g] = append(owned[g], newLock(false))
		}
	}
	shared := newLock(true)
	owned[0] = append(owned[0], shared)
	owned[1] = append(owned[1], shared)
	if m.maxTTL == 0 {
		m.maxTTL = ctxlock.DefaultTimeout
	}

	stop := make(chan struct{})
	var bg sync.WaitGroup
	// Chaos: the store goes unavailable and slow for random windows.
	chaosRng := rand.New(rand.NewPCG(seed, 1))
	m.mgrCloseErr = make([]bool, nMgr)
	bg.Go(func() {
		var latency time.Duration
		// Some seeds run calm, some with sparse faults, some with dense ones.
		mode := chaosRng.IntN(3)
		m.logf("chaos mode %d", mode)
		for {
			pause := 400 * time.Millisecond
			if mode < 2 {
				pause = 4 * time.Second
			}
			select {
			case <-stop:
				return
			case <-time.After(randDur(chaosRng, pause)):
			}
			if mode == 0 {
				continue
			}
			switch chaosRng.IntN(4) {
			case 0:
				w := randDur(chaosRng, pick(chaosRng, 30*time.Millisecond, 300*time.Millisecond, 2*time.Second))
				m.logf("chaos: store unavailable for %v", w)
				m.setDegraded(true)
				m.store.SetUnavailable(true)
				select {
				case <-stop:
				case <-time.After(w):
				}
				m.store.SetUnavailable(false)
				m.setDegraded(latency != 0)
				m.logf("chaos: store available")
			case 1:
				latency = pick(chaosRng, 0, 0, time.Millisecond, 10*time.Millisecond, 40*time.Millisecond, 150*time.Millisecond)
				m.logf("chaos: latency %v", latency)
				m.setDegraded(latency != 0)
				m.store.SetLatency(latency)
			}
		}
	})
	monRng := rand.New(rand.NewPCG(seed, 2))
	bg.Go(func() { m.monitor(monRng, stop) })
	if wq {
		evRng := rand.New(rand.NewPCG(seed, 4))
		bg.Go(func() { m.evictor(evRng, stop) })
	}

	// Closer: with probability 1/2, one Manager closes at a random point.
	closerRng := rand.New(rand.NewPCG(seed, 3))
	var closer sync.WaitGroup
	if closerRng.IntN(2) == 0 {
		i := closerRng.IntN(nMgr)
		at := randDur(closerRng, 3*time.Second)
		var timeout time.Duration
		if closerRng.IntN(2) == 0 {
			timeout = time.Duration(1+closerRng.IntN(500)) * time.Millisecond
		}
		closer.Go(func() {
			time.Sleep(at)
			m.closeManager(i, timeout)
		})
	}

	var workers sync.WaitGroup
	for g := range nWorkers {
		wr := rand.New(rand.NewPCG(seed, uint64(100+g)))
		locks := owned[g]
		workers.Go(func() { m.worker(g, wr, locks) })
	}
	workers.Wait()
	closer.Wait()
	close(stop)
	bg.Wait()
	m.store.SetUnavailable(false)
	m.store.SetLatency(0)
	m.setDegraded(false)
	m.logf("workers done")

	// Every Manager closes, and Close returns within a bound.
	allNil := true
	for i := range m.mgrs {
		if !m.closeManager(i, 0) {
			allNil = false
		}
	}
	m.mu.Lock()
	allNil = allNil && m.closeErrs == 0
	m.mu.Unlock()
	synctest.Wait() // the watchers record the last ends
	m.mu.Lock()
	for _, h := range m.holds {
		if h.expired != nil && isOpen(h.expired) {
			m.failLocked("hold #%d (L%d m%d) still open after every Manager closed", h.id, h.lock, h.mgr)
		}
	}
	m.mu.Unlock()
	close(m.done)
	m.watchers.Wait()
	m.checkHistory()

	// Liveness: every key is acquirable by a fresh Manager: at once if
	// every Close confirmed its releases, else within the longest TTL.
	fresh := ctxlock.NewManager(m.store, ctxlock.WithNamespace("ns:"))
	for k := range m.keys {
		l := fresh.NewLock(m.keys[k], ctxlock.WithTTL(time.Second))
		start := time.Now()
		if allNil && wq && m.store.(*wqBackend).LeaveFails(m.fullKey(k)) > 0 {
			// A Leave that failed leaves its waiter queued for its keep
			// (and a grant to it for at most that long).
			ctx, cancel := context.WithTimeout(context.Background(), 2*m.wqCfg.keep+time.Second)
			_, err := l.Lock(ctx)
			cancel()
			if err != nil {
				m.failf("liveness: key %s (a Leave failed) not acquirable within %v: %v", m.keys[k], 2*m.wqCfg.keep+time.Second, err)
				continue
			}
			m.logf("fresh Manager got %s after %v", m.keys[k], time.Since(start))
		} else if allNil {
			ok, _, err := l.TryLock(context.Background())
			if err != nil || !ok {
				_, _, tok, rem, held := m.store.Holder(m.fullKey(k))
				m.failf("liveness: after every Close returned nil, TryLock of %s = %v, %v (backend: token %d held %v remaining %v)", m.keys[k], ok, err, tok, held, rem)
				continue
			}
		} else {
			bound := m.maxTTL + time.Second
			if wq {
				bound += 2 * m.wqCfg.keep
			}
			ctx, cancel := context.WithTimeout(context.Background(), bound)
			_, err := l.Lock(ctx)
			cancel()
			if err != nil {
				m.failf("liveness: key %s not acquirable within %v: %v", m.keys[k], bound, err)
				continue
			}
			m.logf("fresh Manager got %s after %v", m.keys[k], time.Since(start))
		}
		if err := l.Unlock(); err != nil {
			m.failf("fresh Unlock of %s: %v", m.keys[k], err)
		}
	}
	if err := fresh.Close(context.Background()); err != nil {
		m.failf("fresh Close: %v", err)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.violations) > 0 || os.Getenv("CTXLOCK_MODEL_TRACE") != "" {
		tr := m.trace
		if wb, ok := m.store.(*wqBackend); ok && os.Getenv("CTXLOCK_MODEL_TRACE") != "" {
			// Merged by time (both are in time order).
			var merged []string
			ev := wb.Trace()
			i := 0
			for _, line := range tr {
				at, _ := time.ParseDuration(strings.Fields(line)[0])
				for i < len(ev) && ev[i].at.Sub(m.t0) <= at {
					merged = append(merged, ev[i].msg)
					i++
				}
				merged = append(merged, line)
			}
			for ; i < len(ev); i++ {
				merged = append(merged, ev[i].msg)
			}
			tr = merged
		}
		if len(tr) > 400 && os.Getenv("CTXLOCK_MODEL_TRACE") == "" {
			tr = tr[len(tr)-400:]
		}
		t.Logf("seed %d trace:\n%s", seed, strings.Join(tr, "\n"))
	}
	for _, v := range m.violations {
		t.Errorf("seed %d: %s", seed, v)
	}
	t.Logf("seed %d: %d managers, %d keys, %d workers, %d locks, %d holds, %d failed waits (longest free gap %v), %v fake time, reasons %v",
		seed, nMgr, nKeys, nWorkers, len(m.locks), len(m.holds), len(m.failedWaits), m.maxGap, m.now(), m.reasons)
	if wq {
		t.Logf("seed %d: wq %v: %d evictions, %+v", seed, m.wqCfg, len(m.evictions), m.store.(*wqBackend).Stats())
	}
}

// closeManager closes mgrs[i] (timeout 0: no deadline but a generous bound
// checked afterwards) and checks that every hold of it ended. It reports
// whether Close returned nil.
func (m *model) closeManager(i int, timeout time.Duration) bool {
	ctx := context.Background()
	cancel := context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	defer cancel()
	m.closing[i].Store(true)
	m.logf("close m%d (timeout %v)", i, timeout)
	start := time.Now()
	err := m.mgrs[i].Close(ctx)
	took := time.Since(start)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.logLocked("close m%d returned after %v: %v", i, took, err)
	if m.closedAt[i].IsZero() {
		m.closedAt[i] = time.Now()
	}
	if err != nil {
		if timeout == 0 || !errors.Is(err, context.DeadlineExceeded) {
			m.failLocked("Close of m%d (timeout %v) = %v", i, timeout, err)
		}
		m.closeErrs++
		m.mgrCloseErr[i] = true
	}
	if bound := 2*m.maxTTL + 5*time.Second; took > bound {
		m.failLocked("Close of m%d took %v (> %v)", i, took, bound)
	}
	for _, h := range m.holds {
		if h.mgr == i && h.expired != nil && isOpen(h.expired) {
			m.failLocked("hold #%d (L%d) of m%d still open after its Manager's Close returned", h.id, h.lock, i)
		}
	}
	return err == nil
}

// acquireCtx returns a random bounded context for a Lock call.
func acquireCtx(rng *rand.Rand) (context.Context, context.CancelFunc, string) {
	switch rng.IntN(4) {
	case 0:
		d := randDur(rng, 50*time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), d)
		return ctx, cancel, "timeout " + d.String()
	case 1:
		d := randDur(rng, 2*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), d)
		return ctx, cancel, "timeout " + d.String()
	case 2:
		d := randDur(rng, 500*time.Millisecond)
		ctx, cancel := context.WithCancel(context.Background())
		t := time.AfterFunc(d, cancel)
		return ctx, func() { t.Stop(); cancel() }, "cancel after " + d.String()
	default:
		if rng.IntN(10) == 0 {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, func() {}, "already cancelled"
		}
		d := 10 * time.Second
		ctx, cancel := context.WithTimeout(context.Background(), d)
		return ctx, cancel, "timeout " + d.String()
	}
}

// wstate is a worker's own current hold on one Lock value.
type wstate struct {
	h        *mhold
	unlocked bool // this worker's Unlock of it returned nil
}

var errFn = errors.New("model: fn failed")

func (m *model) worker(g int, rng *rand.Rand, locks []*mlock) {
	cur := make(map[*mlock]*wstate)
	steps := 20 + rng.IntN(60)
	for step := range steps {
		time.Sleep(randDur(rng, pick(rng, 0, time.Millisecond, 20*time.Millisecond, 100*time.Millisecond)))
		ml := pick(rng, locks...)
		st := cur[ml]
		if st != nil && !isOpen(st.h.expired) {
			m.checkEnded(g, ml, st)
			delete(cur, ml)
			st = nil
		}
		switch op := rng.IntN(15); {
		case op >= 13:
			// A burst: lock, unlock, lock again at once, as loops do.
			for range 2 + rng.IntN(6) {
				m.opLock(g, rng, ml, cur)
				if rng.IntN(2) == 0 {
					time.Sleep(randDur(rng, 2*time.Millisecond))
				}
				m.opUnlock(g, ml, cur)
			}
		case op < 4:
			m.opLock(g, rng, ml, cur)
		case op < 6:
			m.opTryLock(g, rng, ml, cur)
		case op < 7:
			m.opDo(g, rng, ml)
			if st != nil && !isOpen(st.h.expired) {
				delete(cur, ml) // Do waited for it to end; Err is Do's hold's now
			}
		case op < 10:
			m.opUnlock(g, ml, cur)
		case op < 12:
			if st != nil {
				d := randDur(rng, pick(rng, 2*ml.ttl, 50*time.Millisecond, 5*time.Millisecond))
				m.logf("g%d step %d: hold L%d for up to %v", g, step, ml.idx, d)
				select {
				case <-st.h.expired:
					m.checkEnded(g, ml, st)
					delete(cur, ml)
				case <-time.After(d):
				}
			}
		default:
			m.probe(g, ml, st)
		}
	}
	// At the end a worker unlocks what it holds, or (a crash) leaves it to
	// the Manager's Close.
	for ml, st := range cur {
		if rng.IntN(3) > 0 {
			m.logf("g%d: final unlock L%d", g, ml.idx)
			if err := ml.l.Unlock(); err == nil {
				st.unlocked = true
			}
		} else {
			m.logf("g%d: leaves L%d held", g, ml.idx)
		}
	}
}

// checkLockErr checks an error from Lock, TryLock or Do's Lock.
func (m *model) checkLockErr(g int, what string, ml *mlock, ctx context.Context, err error, try bool) {
	closing := m.closing[ml.mgr].Load()
	switch {
	case ml.invalid:
		if !errors.Is(err, ctxlock.ErrInvalidOption) {
			m.failf("g%d %s L%d (invalid options) = %v, want ErrInvalidOption", g, what, ml.idx, err)
		}
	case ctx.Err() != nil:
		if !errors.Is(err, ctx.Err()) && !(closing && errors.Is(err, ctxlock.ErrClosed)) &&
			!(try && errors.Is(err, ctxlock.ErrUnavailable)) {
			m.failf("g%d %s L%d: ctx ended (%v) but err = %v", g, what, ml.idx, ctx.Err(), err)
		}
	case errors.Is(err, ctxlock.ErrClosed):
		if !closing {
			m.failf("g%d %s L%d = %v before its Manager's Close began", g, what, ml.idx, err)
		}
	case try && errors.Is(err, ctxlock.ErrUnavailable):
		// TryLock reports a transient fault.
	case try && strings.Contains(err.Error(), "longer than the validity window"):
		// TryLock's attempt outlasted its validity window (a slow store):
		// reported with no sentinel to match (see the report).
	default:
		m.failf("g%d %s L%d: unexpected error with a live ctx: %v", g, what, ml.idx, err)
	}
	if !try && ctx.Err() == nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		m.failf("g%d %s L%d = %v, matching a context error, while its ctx is live", g, what, ml.idx, err)
	}
}

func (m *model) opLock(g int, rng *rand.Rand, ml *mlock, cur map[*mlock]*wstate) {
	ctx, cancel, desc := acquireCtx(rng)
	defer cancel()
	m.logf("g%d Lock L%d (%s)", g, ml.idx, desc)
	old := cur[ml]
	start := time.Now()
	expired, err := ml.l.Lock(ctx)
	if err != nil {
		if ctx.Err() != nil && !m.closing[ml.mgr].Load() && !ml.invalid {
			m.mu.Lock()
			m.failedWaits = append(m.failedWaits, failedWait{g, ml.idx, ml.key, ml.mgr, start, time.Now()})
			m.mu.Unlock()
		}
		m.logf("g%d Lock L%d: %v", g, ml.idx, err)
		m.checkLockErr(g, "Lock", ml, ctx, err, false)
		if expired != nil {
			m.failf("g%d Lock L%d returned a channel with error %v", g, ml.idx, err)
		}
		return
	}
	m.acquired(g, ml, start, expired, old, cur)
}

func (m *model) acquired(g int, ml *mlock, from time.Time, expired <-chan struct{}, old *wstate, cur map[*mlock]*wstate) {
	if expired == nil {
		m.failf("g%d L%d acquired with a nil channel", g, ml.idx)
		return
	}
	if ml.invalid {
		m.failf("g%d L%d with invalid options acquired", g, ml.idx)
	}
	tok := ml.l.Token()
	if !isOpen(expired) {
		tok = 0 // it ended already: Token may be of a later hold
	} else if tok == 0 {
		m.failf("g%d L%d: Token() = 0 while the hold is open", g, ml.idx)
	}
	if old != nil && isOpen(old.h.expired) {
		m.failf("g%d L%d: a new hold while this worker's hold #%d on the value is open", g, ml.idx, old.h.id)
	}
	h := m.register(g, ml, from, expired, tok, false)
	// old ended (its Err is no longer the value's to tell): it is dropped.
	if !ml.shared && isOpen(expired) {
		if err := ml.l.Err(); err != nil && isOpen(expired) {
			m.failf("g%d L%d: Err() = %v while held", g, ml.idx, err)
		}
	}
	cur[ml] = &wstate{h: h}
}

func (m *model) opTryLock(g int, rng *rand.Rand, ml *mlock, cur map[*mlock]*wstate) {
	ctx, cancel, desc := acquireCtx(rng)
	defer cancel()
	old := cur[ml]
	wasOpen := old != nil && isOpen(old.h.expired)
	start := time.Now()
	ok, expired, err := ml.l.TryLock(ctx)
	m.logf("g%d TryLock L%d (%s) = %v, %v", g, ml.idx, desc, ok, err)
	if err != nil {
		m.checkLockErr(g, "TryLock", ml, ctx, err, true)
		if ok || expired != nil {
			m.failf("g%d TryLock L%d = %v, %v with error %v", g, ml.idx, ok, expired != nil, err)
		}
		return
	}
	if !ok {
		if expired != nil {
			m.failf("g%d TryLock L%d = false with a channel", g, ml.idx)
		}
		return
	}
	if wasOpen && old != nil && isOpen(old.h.expired) {
		m.failf("g%d TryLock L%d succeeded on a value this worker holds (hold #%d open)", g, ml.idx, old.h.id)
	}
	m.acquired(g, ml, start, expired, old, cur)
}

func (m *model) opDo(g int, rng *rand.Rand, ml *mlock) {
	ctx, cancel, desc := acquireCtx(rng)
	defer cancel()
	hold := randDur(rng, pick(rng, 2*ml.ttl, 50*time.Millisecond, 5*time.Millisecond))
	fail := rng.IntN(3) == 0
	m.logf("g%d Do L%d (%s) fn holds %v fail=%v", g, ml.idx, desc, hold, fail)
	ran := false
	var endedEarly error
	start := time.Now()
	err := ctxlock.Do(ctx, ml.l, func(fctx context.Context) error {
		ran = true
		var tok uint64
		if !ml.shared {
			tok = ml.l.Token()
			if fctx.Err() != nil {
				tok = 0
			} else if tok == 0 {
				m.failf("g%d Do L%d: Token() = 0 in fn", g, ml.idx)
			}
		}
		h := m.register(g, ml, start, nil, tok, true)
		select {
		case <-fctx.Done():
			endedEarly = context.Cause(fctx)
		case <-time.After(hold):
		}
		m.mu.Lock()
		h.end = time.Now()
		m.logLocked("Do hold #%d ends (%v)", h.id, endedEarly)
		m.mu.Unlock()
		if fail {
			return errFn
		}
		return nil
	})
	m.logf("g%d Do L%d = %v", g, ml.idx, err)
	if !ran {
		if err == nil {
			m.failf("g%d Do L%d returned nil without running fn", g, ml.idx)
			return
		}
		m.checkLockErr(g, "Do", ml, ctx, err, false)
		return
	}
	if fail && !errors.Is(err, errFn) {
		m.failf("g%d Do L%d = %v, want fn's error", g, ml.idx, err)
	}
	if endedEarly != nil && ctx.Err() == nil && !ml.shared {
		// The hold ended under fn (expired, closed, lost): Do says so.
		if !errors.Is(err, ctxlock.ErrLost) {
			m.failf("g%d Do L%d: hold ended under fn (%v) but Do = %v", g, ml.idx, endedEarly, err)
		}
	}
	if err != nil && !errors.Is(err, errFn) && !errors.Is(err, ctxlock.ErrLost) {
		m.failf("g%d Do L%d: unexpected error %v", g, ml.idx, err)
	}
	if endedEarly == nil && !fail && err != nil {
		m.failf("g%d Do L%d: fn finished with the hold live and returned nil, but Do = %v", g, ml.idx, err)
	}
}

func (m *model) opUnlock(g int, ml *mlock, cur map[*mlock]*wstate) {
	st := cur[ml]
	err := ml.l.Unlock()
	m.logf("g%d Unlock L%d = %v", g, ml.idx, err)
	if err != nil {
		if !errors.Is(err, ctxlock.ErrNotHeld) {
			m.failf("g%d Unlock L%d = %v, want nil or ErrNotHeld", g, ml.idx, err)
		}
		if st != nil && isOpen(st.h.expired) {
			m.failf("g%d Unlock L%d = ErrNotHeld while this worker's hold #%d is open", g, ml.idx, st.h.id)
		}
		return
	}
	if ml.shared {
		return
	}
	if st == nil {
		m.failf("g%d Unlock L%d = nil, but this worker (its only user) holds nothing", g, ml.idx)
		return
	}
	if isOpen(st.h.expired) {
		m.failf("g%d Unlock L%d = nil, but the expiry channel of hold #%d is still open", g, ml.idx, st.h.id)
	}
	st.unlocked = true
	m.checkEnded(g, ml, st)
	delete(cur, ml)
}

// checkEnded checks the Lock value after this worker's hold st ended.
func (m *model) checkEnded(g int, ml *mlock, st *wstate) {
	e := ml.l.Err()
	reason := ""
	for _, r := range []error{ctxlock.ErrUnlocked, ctxlock.ErrLost, ctxlock.ErrExpired, ctxlock.ErrClosed} {
		if errors.Is(e, r) {
			reason = r.Error()
		}
	}
	if ml.shared {
		if e != nil && reason == "" {
			m.failf("g%d L%d (shared) Err() = %v after hold #%d ended", g, ml.idx, e, st.h.id)
		}
		return
	}
	m.mu.Lock()
	m.reasons[strings.TrimPrefix(reason, "ctxlock: ")]++
	m.mu.Unlock()
	if reason == "" {
		m.failf("g%d L%d: Err() = %v after hold #%d ended", g, ml.idx, e, st.h.id)
	}
	if st.unlocked && !errors.Is(e, ctxlock.ErrUnlocked) {
		m.failf("g%d L%d: unlocked by this worker, but Err() = %v", g, ml.idx, e)
	}
	if !st.unlocked && errors.Is(e, ctxlock.ErrUnlocked) {
		m.failf("g%d L%d: Err() = %v, but nobody unlocked hold #%d", g, ml.idx, e, st.h.id)
	}
	m.mu.Lock()
	_, evicted := m.evictedLocked(st.h)
	m.mu.Unlock()
	if errors.Is(e, ctxlock.ErrLost) && !evicted {
		m.failf("g%d L%d: hold #%d lost (%v) with no eviction: a refresh found the lease gone", g, ml.idx, st.h.id, e)
	}
	if errors.Is(e, ctxlock.ErrClosed) && !m.closing[ml.mgr].Load() {
		m.failf("g%d L%d: Err() = %v, but m%d was not closed", g, ml.idx, e, ml.mgr)
	}
	if tok := ml.l.Token(); tok != 0 {
		m.failf("g%d L%d: Token() = %d after hold #%d ended", g, ml.idx, tok, st.h.id)
	}
	if err := ml.l.Unlock(); !errors.Is(err, ctxlock.ErrNotHeld) {
		m.failf("g%d L%d: Unlock after hold #%d ended = %v, want ErrNotHeld", g, ml.idx, st.h.id, err)
	}
}

// probe checks Token and Err against this worker's view.
func (m *model) probe(g int, ml *mlock, st *wstate) {
	if ml.shared || st == nil {
		return
	}
	tok, e := ml.l.Token(), ml.l.Err()
	if isOpen(st.h.expired) {
		if e != nil {
			m.failf("g%d L%d: Err() = %v while hold #%d is open", g, ml.idx, e, st.h.id)
		}
		if st.h.token != 0 && tok != st.h.token {
			m.failf("g%d L%d: Token() = %d while hold #%d (token %d) is open", g, ml.idx, tok, st.h.id, st.h.token)
		}
	}
}

// checkHistory checks the recorded holds once every one has ended.
func (m *model) checkHistory() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, h := range m.holds {
		if h.end.IsZero() {
			m.failLocked("hold #%d has no end", h.id)
			continue
		}
		if c := m.closedAt[h.mgr]; !c.IsZero() && h.start.After(c) {
			m.failLocked("hold #%d of m%d began at %v, after its Manager's Close returned at %v", h.id, h.mgr, h.start.Sub(m.t0), c.Sub(m.t0))
		}
		if h.end.Before(h.start) {
			m.failLocked("hold #%d ends before it starts", h.id)
		}
		if h.noRefresh && !h.viaDo && h.end.After(h.start.Add(h.validity)) {
			m.failLocked("hold #%d (WithoutRefresh) ended %v after start, past its validity %v", h.id, h.end.Sub(h.start), h.validity)
		}
		// An evicted hold finds out at its next refresh, at the latest
		// when its validity from its last confirmed refresh (before the
		// eviction) ends.
		if ev, ok := m.evictedLocked(h); ok && !h.viaDo && h.end.After(ev.Add(m.locks[h.lock].ttl)) {
			m.failLocked("hold #%d (L%d) evicted at %v but ended only at %v (TTL %v)", h.id, h.lock, ev.Sub(m.t0), h.end.Sub(m.t0), m.locks[h.lock].ttl)
		}
	}
	m.checkWaitsLocked()
	for i, a := range m.holds {
		for _, b := range m.holds[i+1:] {
			if a.key != b.key || a.end.IsZero() || b.end.IsZero() {
				continue
			}
			// Data loss: an evicted lease's holder finds out at its next
			// refresh, and a hand-off of a lease evicted meanwhile is
			// adopted all the same.
			_, aEvicted := m.evictedLocked(a)
			_, bEvicted := m.evictedLocked(b)
			if a.start.Before(b.end) && b.start.Before(a.end) && !aEvicted && !bEvicted {
				m.failLocked("atomicity: holds #%d [%v, %v] (L%d token %d) and #%d [%v, %v] (L%d token %d) of %s overlap",
					a.id, a.start.Sub(m.t0), a.end.Sub(m.t0), a.lock, a.token, b.id, b.start.Sub(m.t0), b.end.Sub(m.t0), b.lock, b.token, m.keys[a.key])
			}
			if a.token != 0 && b.token != 0 {
				first, second := a, b
				if b.start.Before(a.start) {
					first, second = b, a
				}
				// A lease evicted before its holder heard of it (a late
				// hand-off) starts a hold after later tokens: data loss.
				_, secondEvicted := m.evictedLocked(second)
				if first.start.Before(second.start) && first.token >= second.token && !secondEvicted {
					m.failLocked("fencing: hold #%d (start %v, token %d) before #%d (start %v, token %d) of %s",
						first.id, first.start.Sub(m.t0), first.token, second.id, second.start.Sub(m.t0), second.token, m.keys[a.key])
				}
			}
		}
	}
}

// maxFreeWait is the longest a blocked Lock may leave a free key untaken,
// with the store healthy: its backoff is capped at MaxRetryDelay (jittered
// into [d/2, d]), and a release notification cuts it short.
const maxFreeWait = ctxlock.MaxRetryDelay + 500*time.Millisecond

// checkWaitsLocked flags Lock calls that gave up (their ctx ended) although
// their key lay free, with the store healthy, for longer than maxFreeWait
// during the call: a lost wake-up.
func (m *model) checkWaitsLocked() {
	if m.wq && m.wqCfg.keep < ctxlock.MaxRetryDelay {
		// Waiters lose their place between retries: two of them can take
		// turns refusing each other a free key (each retries after its
		// own entry lapsed, while the other's is live) for several retry
		// periods. Progress is only probabilistic then.
		return
	}
	bound := maxFreeWait + m.wqCfg.hintWindow // a free key is kept for the waiter hinted
	if m.wq && (m.wqCfg.dropP > 0 || m.wqCfg.delayP > 0) {
		// A grant whose hand-off is lost or late counts as free here until
		// its waiter's next retry (up to MaxRetryDelay) adopts it; if that
		// waiter gives up first, its Leave grants the key to the next one,
		// whose hand-off may be late too.
		bound += ctxlock.MaxRetryDelay
	}
	for _, w := range m.failedWaits {
		var busy [][2]time.Time
		for _, h := range m.holds {
			if h.key != w.key {
				continue
			}
			ml := m.locks[h.lock]
			tail := ml.ttl - ml.validity // the grace of an expired hold's release
			if m.mgrCloseErr[h.mgr] {
				tail = ml.ttl + ml.ttl // released late, or lapsing at its TTL
			}
			busy = append(busy, [2]time.Time{h.start, h.end.Add(tail)})
		}
		for _, d := range m.degraded {
			// After an outage a waiter's backoff (and a failed release's
			// retry, up to 1.28s) may still run.
			tail := 1500 * time.Millisecond
			if m.wq {
				// A Leave that failed leaves its waiter queued for its
				// keep, and a grant to it lasts at most that long.
				tail += 2 * m.wqCfg.keep
			}
			busy = append(busy, [2]time.Time{d[0], d[1].Add(tail)})
		}
		for _, ev := range m.evictions {
			// An evicted grant is found gone only at its waiter's next
			// retry, which queues it again at the back.
			if ev.key == w.key {
				busy = append(busy, [2]time.Time{ev.at, ev.at.Add(1500*time.Millisecond + 2*m.wqCfg.keep)})
			}
		}
		slices.SortFunc(busy, func(a, b [2]time.Time) int { return a[0].Compare(b[0]) })
		// Walk the free stretches within [w.start, w.end].
		from := w.start
		for _, b := range append(busy, [2]time.Time{w.end, w.end}) {
			if b[0].After(from) {
				gapEnd := b[0]
				if gapEnd.After(w.end) {
					gapEnd = w.end
				}
				if gapEnd.Sub(from) > m.maxGap {
					m.maxGap = gapEnd.Sub(from)
				}
				if gapEnd.Sub(from) > bound {
					m.failLocked("liveness: g%d Lock L%d (m%d) on %s [%v, %v] gave up, but the key lay free with the store healthy over [%v, %v]",
						w.g, w.lock, w.mgr, m.keys[w.key], w.start.Sub(m.t0), w.end.Sub(m.t0), from.Sub(m.t0), gapEnd.Sub(m.t0))
					break
				}
			}
			if b[1].After(from) {
				from = b[1]
			}
			if !from.Before(w.end) {
				break
			}
		}
	}
}

// TestRandomSchedulesWaiterQueue runs the model of TestRandomSchedules on
// wqBackend, a fake of the Redis backend's server-side waiter queue with
// hand-off (ctxlock.WaiterQueue), whose hand-off notifications are randomly
// lost or late, whose slow calls may take effect with their reply lost, and
// whose keys are now and then evicted (data loss).
//
// CTXLOCK_MODEL_SEEDS and CTXLOCK_MODEL_SEED work as for
// TestRandomSchedules.
func TestRandomSchedulesWaiterQueue(t *testing.T) {
	runSeeds(t, modelWaiterQueue, 24, 8)
}

// TestRandomSchedulesWaiterHints runs the model of TestRandomSchedules on
// wqBackend in its hints mode (goredis.WithWaiterHints, as on each node of
// the redlock backend): a release keeps the free key for the queue's first
// waiter for a hint window and tells it with a zero Handoff, which may be
// lost or late, as grants are in TestRandomSchedulesWaiterQueue; the other
// faults are the same.
//
// CTXLOCK_MODEL_SEEDS and CTXLOCK_MODEL_SEED work as for
// TestRandomSchedules.
func TestRandomSchedulesWaiterHints(t *testing.T) {
	runSeeds(t, modelWaiterHints, 16, 6)
}

// randomWQConfig picks the waiter queue's settings and faults for a seed.
func randomWQConfig(rng *rand.Rand) wqConfig {
	c := wqConfig{
		// Keeps shorter than MaxRetryDelay are accepted (waiters lose
		// their place between retries; exclusion and progress hold).
		keep:         pick(rng, 3*time.Second, 3*time.Second, 1500*time.Millisecond, 600*time.Millisecond),
		dropP:        pick(rng, 0, 0, 0.3, 1),
		delayP:       pick(rng, 0, 0.3, 1),
		maxDelay:     pick(rng, 5*time.Millisecond, 100*time.Millisecond, 1500*time.Millisecond),
		earlyP:       pick(rng, 0, 0.5),
		grantOnLapse: rng.IntN(3) == 0,
		notifyLapses: rng.IntN(2) == 0,
		hintOnUp:     rng.IntN(2) == 0,
	}
	return c
}

// evictor makes the store forget a random key's lease now and then.
func (m *model) evictor(rng *rand.Rand, stop <-chan struct{}) {
	mode := rng.IntN(3)
	if mode == 0 {
		return
	}
	every := 3 * time.Second
	if mode == 2 {
		every = 400 * time.Millisecond
	}
	for {
		select {
		case <-stop:
			return
		case <-time.After(randDur(rng, every)):
		}
		k := rng.IntN(len(m.keys))
		m.mu.Lock()
		_, _, tok, _, held := m.store.Holder(m.fullKey(k))
		if held {
			m.store.Evict(m.fullKey(k))
			m.evictions = append(m.evictions, mevict{key: k, token: tok, at: time.Now()})
			m.logLocked("evict %s (token %d)", m.keys[k], tok)
		}
		m.mu.Unlock()
	}
}
