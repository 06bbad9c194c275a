// Package stresstest is a real-time concurrency stress of the root package
// (Manager, Lock, TryLock, Unlock, Do, Health, Close, expiry channels) over
// any Backend: real goroutine interleavings, which the fake-time schedules
// (random_schedule_test.go) cannot reach. Every call must return within a
// bound (else the test fails with a goroutine dump), holds are checked for
// mutual exclusion and increasing fencing tokens (locktest.Checker), and
// with a long TTL a release that is lost shows as a key that stays held.
package stresstest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/locktest"
)

// Config sizes a run.
type Config struct {
	Managers   int           // Managers sharing the backend
	Goroutines int           // per Manager
	Keys       int           // keys all of them contend on
	Ops        int           // per goroutine
	Bound      time.Duration // every call returns within it
	// ShortTTL is the TTL of the short-TTL run (refreshed every ShortTTL/3),
	// ShortDrift its drift factor. Its drift allowance (ShortTTL ×
	// ShortDrift + 2ms) is how late a goroutine (the scheduler's, the
	// holder's) may run on a loaded machine before two holds overlap: a
	// real-time run cannot tell that from a defect, so it must be wide.
	ShortTTL   time.Duration
	ShortDrift float64
	// Inspect, if set, describes what the backend stores for a key (the
	// Manager's namespace included) when a key stays held: it goes in the
	// failure message.
	Inspect func(key string) string
}

// Default is a run of a few seconds under -race on two cores. Its short
// TTL leaves 42ms for goroutines to run late (22ms, with a 50ms TTL, was
// overrun now and then on a loaded machine: a hold seen open up to 42ms
// after the next one began), and holds expire on their own (a refresh
// late by about 18ms): Unlock races expiry.
var Default = Config{
	Managers: 3, Goroutines: 4, Keys: 3, Ops: 150, Bound: 10 * time.Second,
	ShortTTL: 90 * time.Millisecond, ShortDrift: 0.45,
}

// longTTL: no lease lapses during a run, so a lost release leaves its key
// held past any bound.
const longTTL = time.Minute

// Run runs every stress case on backends made by newBackend (one per case;
// the case's Managers share it).
func Run(t *testing.T, newBackend func(t *testing.T) ctxlock.Backend, cfg Config) {
	t.Run("Mixed", func(t *testing.T) { mixed(t, newBackend(t), cfg) })
	t.Run("CloseRacesCalls", func(t *testing.T) { closeRace(t, newBackend(t), cfg) })
	t.Run("ShortTTL", func(t *testing.T) { shortTTL(t, newBackend(t), cfg) })
}

// run is one case: Managers on a backend, a watchdog and a checker.
type run struct {
	t       *testing.T
	b       ctxlock.Backend
	cfg     Config
	prefix  string
	keys    []string
	checker locktest.Checker
	stuck   chan string
	errs    chan string
	ended   atomic.Int64 // holds that ended before their holder let go
	stalled atomic.Bool  // a key stayed held (see stuck): the run stops
	// lateness, when set (runs whose holds expire), measures how late this
	// process's timers and goroutines ran meanwhile: see finish.
	lateness *latenessProbe
}

func newRun(t *testing.T, b ctxlock.Backend, cfg Config) *run {
	r := &run{t: t, b: b, cfg: cfg, stuck: make(chan string, 1), errs: make(chan string, 100)}
	r.prefix = fmt.Sprintf("stress-%x/", rand.Uint64())
	for i := range cfg.Keys {
		r.keys = append(r.keys, "k"+strconv.Itoa(i))
	}
	return r
}

// managers returns cfg.Managers Managers on the run's backend (see manager).
func (r *run) managers() []*ctxlock.Manager {
	ms := make([]*ctxlock.Manager, r.cfg.Managers)
	for i := range ms {
		ms[i] = r.manager()
	}
	return ms
}

// manager returns a Manager on the run's backend, closed at the end of the
// test (bounded) if the test did not close it.
func (r *run) manager() *ctxlock.Manager {
	m := ctxlock.NewManager(r.b, ctxlock.WithNamespace(r.prefix))
	r.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Bound)
		defer cancel()
		_ = m.Close(ctx)
	})
	return m
}

// bounded runs f and reports it to the test's goroutine (see wait) if it
// has not returned within the bound.
func (r *run) bounded(what string, f func()) {
	timer := time.AfterFunc(r.cfg.Bound, func() {
		select {
		case r.stuck <- what:
		default:
		}
	})
	defer timer.Stop()
	f()
}

// errorf reports a failure from any goroutine.
func (r *run) errorf(format string, args ...any) {
	select {
	case r.errs <- fmt.Sprintf(format, args...):
	default:
	}
}

// wait waits for done, failing the test with a goroutine dump when a call
// overran its bound.
func (r *run) wait(done <-chan struct{}) {
	r.t.Helper()
	select {
	case <-done:
	case what := <-r.stuck:
		buf := make([]byte, 1<<22)
		buf = buf[:runtime.Stack(buf, true)]
		r.t.Fatalf("%s did not return within %v\n\n%s", what, r.cfg.Bound, buf)
	}
}

// finish reports the errors collected and checks the holds.
func (r *run) finish() {
	r.t.Helper()
	close(r.errs)
	for e := range r.errs {
		r.t.Error(e)
	}
	var n int
	if r.lateness == nil {
		n = r.checker.Check(r.t)
	} else {
		n = r.checkExpiring()
	}
	r.t.Logf("%d holds checked, %d ended before their holder let go", n, r.ended.Load())
	if n == 0 {
		r.t.Error("no hold at all: the run checked nothing")
	}
}

// parallel runs f(i) for i in [0, n) in goroutines and waits for them all.
func (r *run) parallel(n int, f func(i int)) {
	r.t.Helper()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(i)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	r.wait(done)
}

// hold is the holder's side of one hold: it works, looking at the expiry
// channel, and returns the last instant it saw the channel open (a lower
// bound of the hold's real end) and whether the channel closed meanwhile.
// With long set, it may work up to long first (expiring holds: Unlock then
// races the expiry).
func hold(expired <-chan struct{}, rng *rand.Rand, long time.Duration) (lastOpen time.Time, ended bool) {
	if long > 0 && rng.IntN(3) == 0 {
		now := time.Now()
		select {
		case <-expired:
			return lastOpen, true // never seen open
		default:
			lastOpen = now
		}
		work := time.NewTimer(time.Duration(rng.Int64N(int64(long))))
		select {
		case <-expired:
			work.Stop()
			return lastOpen, true
		case <-work.C:
		}
	}
	for range 1 + rng.IntN(20) {
		now := time.Now()
		select {
		case <-expired:
			return lastOpen, true
		default:
			lastOpen = now
		}
		runtime.Gosched()
	}
	now := time.Now()
	select {
	case <-expired:
		return lastOpen, true
	default:
		return now, false
	}
}

func (r *run) record(key, who string, token uint64, start, end time.Time) {
	if end.IsZero() {
		return // never seen open: nothing relied on
	}
	r.checker.Record(locktest.Hold{Key: key, Owner: who, Token: token, Start: start, End: end})
}

// closedErr reports whether err is what a call on a closed Manager returns.
func closedErr(err error) bool { return errors.Is(err, ctxlock.ErrClosed) }

// worker runs ops random operations on locks of m; shared are Lock values
// that other goroutines use too. With closing set, a call may fail with
// ErrClosed and holds may end with it.
type worker struct {
	r       *run
	m       *ctxlock.Manager
	name    string
	rng     *rand.Rand
	own     []ctxlock.Lock // this goroutine's values, one per key
	shared  []ctxlock.Lock // values other goroutines of m use too, one per key
	ttl     time.Duration
	closing bool // the Manager may close during the run
	// expiring: holds may end on their own (short TTL), so an Unlock may
	// find the hold ended, and a Lock value shared between goroutines
	// could unlock another goroutine's hold: shared values go through Do.
	expiring bool
	long     time.Duration // how long a hold may last (expiring: past its TTL)
}

var errFn = errors.New("stress: fn failed")

type fnPanic struct{}

// step does one random operation. It returns false once the Manager is
// closed.
func (w *worker) step() bool {
	r := w.r
	k := w.rng.IntN(len(w.own))
	key := r.keys[k]
	l := w.own[k]
	useShared := w.rng.IntN(4) == 0
	if useShared {
		l = w.shared[k]
	}
	switch op := w.rng.IntN(10); {
	case op < 4 && !(useShared && w.expiring):
		ctx, cancel, what := w.ctx()
		var expired <-chan struct{}
		var err error
		r.bounded(w.name+": Lock "+what, func() { expired, err = l.Lock(ctx) })
		cancel()
		start := time.Now()
		if err != nil {
			if closedErr(err) && w.closing {
				return false
			}
			if ctx.Err() == nil || !(errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
				r.errorf("%s: Lock %s: unexpected error %v", w.name, what, err)
			} else if what == "" {
				w.stuck("Lock", key, err)
			}
			return true
		}
		w.held(l, key, expired, start)
	case op < 6 && !(useShared && w.expiring):
		ctx, cancel, what := w.ctx()
		var ok bool
		var expired <-chan struct{}
		var err error
		r.bounded(w.name+": TryLock "+what, func() { ok, expired, err = l.TryLock(ctx) })
		cancel()
		start := time.Now()
		switch {
		case err != nil:
			if closedErr(err) && w.closing {
				return false
			}
			if ctx.Err() == nil && !errors.Is(err, ctxlock.ErrUnavailable) {
				r.errorf("%s: TryLock %s: unexpected error %v", w.name, what, err)
			}
		case ok:
			w.held(l, key, expired, start)
		case expired != nil:
			r.errorf("%s: TryLock: not acquired, with an expiry channel", w.name)
		}
	case op < 9:
		w.do(l, key)
	default:
		var err error
		r.bounded(w.name+": Health", func() {
			ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Bound/2)
			defer cancel()
			_, err = w.m.Health(ctx)
		})
		if err != nil && !(w.closing && closedErr(err)) {
			r.errorf("%s: Health: %v", w.name, err)
		}
	}
	return true
}

// ctx returns a context for one Lock or TryLock call: background, already
// cancelled, one with a short timeout, or one another goroutine cancels soon.
func (w *worker) ctx() (context.Context, context.CancelFunc, string) {
	switch w.rng.IntN(6) {
	case 0:
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		return ctx, cancel, "(cancelled ctx)"
	case 1:
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(w.rng.IntN(3000))*time.Microsecond)
		return ctx, cancel, "(short timeout)"
	case 2:
		ctx, cancel := context.WithCancel(context.Background())
		n := w.rng.IntN(50)
		go func() {
			for range n {
				runtime.Gosched()
			}
			cancel()
		}()
		return ctx, cancel, "(cancelled concurrently)"
	default:
		ctx, cancel := context.WithTimeout(context.Background(), w.r.cfg.Bound/2)
		return ctx, cancel, ""
	}
}

// held works under a hold made by Lock or TryLock of l, then unlocks it
// (sometimes with two Unlock calls racing).
func (w *worker) held(l ctxlock.Lock, key string, expired <-chan struct{}, start time.Time) {
	r := w.r
	token := l.Token()
	if token == 0 {
		select {
		case <-expired:
		default:
			r.errorf("%s: Token 0 right after Lock returned, channel open", w.name)
		}
	}
	end, ended := hold(expired, w.rng, w.long)
	r.record(key, w.name, token, start, end)
	if ended {
		r.ended.Add(1)
		w.checkEnded(l, "hold ended before Unlock")
	}
	var errA, errB error
	if w.rng.IntN(3) == 0 && !w.sharedBusy(l) {
		// Two Unlocks of the same hold at once: one releases it. (Not on
		// a shared value: the second could unlock the next goroutine's
		// hold, as a second sync.Mutex.Unlock would.)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.bounded(w.name+": concurrent Unlock", func() { errB = l.Unlock() })
		}()
		r.bounded(w.name+": Unlock", func() { errA = l.Unlock() })
		wg.Wait()
		switch {
		case errA == nil && errB == nil:
			r.errorf("%s: two concurrent Unlocks both returned nil", w.name)
		case errA != nil && errB != nil && !ended && !w.closing && !w.expiring:
			r.errorf("%s: two concurrent Unlocks of a live hold both failed: %v; %v", w.name, errA, errB)
		}
		if errA != nil && errB != nil {
			errA = errB
		} else if errA != nil {
			errA, errB = errB, errA
		}
		// errA: the one that succeeded (or failed, if the hold had ended).
		if errB != nil && !errors.Is(errB, ctxlock.ErrNotHeld) {
			r.errorf("%s: the losing concurrent Unlock: %v, want ErrNotHeld", w.name, errB)
		}
	} else {
		r.bounded(w.name+": Unlock", func() { errA = l.Unlock() })
	}
	select {
	case <-expired:
	default:
		r.errorf("%s: expiry channel open after Unlock (Unlock: %v)", w.name, errA)
	}
	switch {
	case errA == nil:
		if err := l.Err(); !errors.Is(err, ctxlock.ErrUnlocked) && !w.sharedBusy(l) {
			r.errorf("%s: Err after a successful Unlock: %v, want ErrUnlocked", w.name, err)
		}
	case !errors.Is(errA, ctxlock.ErrNotHeld):
		r.errorf("%s: Unlock: %v", w.name, errA)
	case !ended && !w.closing && !w.expiring:
		r.errorf("%s: Unlock of a live hold: %v", w.name, errA)
	}
}

// stuck reports a Lock or Do that waited for key until its context
// (cfg.Bound/2) expired. Holds last microseconds (with the long TTL), so a
// key taken for that long was left held: a release lost, or a lease left
// behind by an attempt, that lapses only at the end of its TTL. (With
// holds that may last past their TTL, a long wait is no defect.)
func (w *worker) stuck(call, key string, err error) {
	if w.closing || w.expiring {
		return
	}
	r := w.r
	if r.stalled.Swap(true) {
		return // reported once: the other goroutines wait for the same key
	}
	msg := fmt.Sprintf("%s: %s of %q waited %v without taking it (%v): a release lost?", w.name, call, key, r.cfg.Bound/2, err)
	if r.cfg.Inspect != nil {
		msg += "\n" + r.cfg.Inspect(r.prefix+key)
	}
	r.errorf("%s", msg)
}

// sharedBusy: l may already hold again, for another goroutine (its Err is
// then nil).
func (w *worker) sharedBusy(l ctxlock.Lock) bool {
	for _, s := range w.shared {
		if s == l {
			return true
		}
	}
	return false
}

// checkEnded checks what Err says of a hold whose channel closed by itself.
func (w *worker) checkEnded(l ctxlock.Lock, when string) {
	err := l.Err()
	if err == nil && w.sharedBusy(l) {
		return
	}
	switch {
	case w.closing && errors.Is(err, ctxlock.ErrClosed):
	case w.expiring && (errors.Is(err, ctxlock.ErrExpired) || errors.Is(err, ctxlock.ErrLost)):
	default:
		w.r.errorf("%s: %s: Err %v", w.name, when, err)
	}
}

// do runs Do with a callback that returns nil, fails, panics, or unlocks
// the lock itself.
func (w *worker) do(l ctxlock.Lock, key string) {
	r := w.r
	kind := w.rng.IntN(4)
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Bound/2)
	defer cancel()
	ran := false
	var end time.Time
	var endedEarly bool
	var recovered any
	var err error
	r.bounded(w.name+": Do", func() {
		defer func() { recovered = recover() }()
		err = ctxlock.Do(ctx, l, func(fctx context.Context) error {
			ran = true
			start := time.Now()
			token := l.Token()
			end, endedEarly = hold(fctx.Done(), w.rng, w.long)
			if endedEarly {
				r.ended.Add(1)
			}
			r.record(key, w.name+"/Do", token, start, end)
			switch kind {
			case 1:
				return errFn
			case 2:
				panic(fnPanic{})
			case 3:
				if uerr := l.Unlock(); uerr != nil && !endedEarly && !w.closing && !w.expiring && !w.sharedBusy(l) {
					r.errorf("%s: Unlock inside Do: %v", w.name, uerr)
				}
			}
			return nil
		})
	})
	if !ran {
		if errors.Is(err, context.DeadlineExceeded) {
			w.stuck("Do", key, err)
		}
		if recovered != nil {
			r.errorf("%s: Do panicked before fn ran: %v", w.name, recovered)
		}
		if err == nil {
			r.errorf("%s: Do returned nil without running fn", w.name)
		}
		return
	}
	if kind == 2 {
		if _, ok := recovered.(fnPanic); !ok {
			r.errorf("%s: Do: fn's panic did not reach the caller (recovered %v)", w.name, recovered)
		}
		return
	}
	if recovered != nil {
		r.errorf("%s: Do panicked: %v", w.name, recovered)
	}
	if kind == 1 && !errors.Is(err, errFn) {
		r.errorf("%s: Do: %v, want fn's error", w.name, err)
	}
	if err != nil && !errors.Is(err, errFn) && !errors.Is(err, ctxlock.ErrLost) {
		r.errorf("%s: Do: %v", w.name, err)
	}
	if errors.Is(err, ctxlock.ErrLost) && !w.closing && !w.expiring {
		r.errorf("%s: Do: hold lost with a long TTL: %v", w.name, err)
	}
}

// workers starts cfg.Goroutines workers per Manager and returns them.
func (r *run) workers(ms []*ctxlock.Manager, ttl time.Duration, closing, expiring bool) []*worker {
	opts := []ctxlock.LockOption{ctxlock.WithTTL(ttl), ctxlock.WithRetryDelay(time.Millisecond)}
	if expiring {
		opts = append(opts, ctxlock.WithDriftFactor(r.cfg.ShortDrift))
	}
	var long time.Duration
	if expiring {
		long = 2 * ttl
	}
	var ws []*worker
	for mi, m := range ms {
		shared := make([]ctxlock.Lock, len(r.keys))
		for k, key := range r.keys {
			shared[k] = m.NewLock(key, opts...)
		}
		for g := range r.cfg.Goroutines {
			w := &worker{
				r: r, m: m, name: fmt.Sprintf("m%d/g%d", mi, g),
				rng:    rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
				shared: shared, ttl: ttl, closing: closing, expiring: expiring, long: long,
			}
			for _, key := range r.keys {
				o := opts
				if expiring && g%2 == 1 {
					// Not refreshed: a long hold expires at its validity
					// deadline, whatever the load.
					o = append(o[:len(o):len(o)], ctxlock.WithoutRefresh())
				}
				w.own = append(w.own, m.NewLock(key, o...))
			}
			ws = append(ws, w)
		}
	}
	return ws
}

// keysFree checks that every key can be taken by a new Manager: at once
// (TryLock) when now is set, else within the bound (Lock: releases are
// sent asynchronously). With the long TTL a lost release fails it.
func (r *run) keysFree(now bool) {
	r.t.Helper()
	m := r.manager()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, key := range r.keys {
			l := m.NewLock(key, ctxlock.WithTTL(longTTL))
			r.bounded("final Lock of "+key+" (a release lost?)", func() {
				if now {
					ok, _, err := l.TryLock(context.Background())
					if !ok || err != nil {
						r.errorf("key %q still held after every Manager closed (TryLock: %v, %v)", key, ok, err)
						return
					}
				} else if _, err := l.Lock(context.Background()); err != nil {
					r.errorf("final Lock of %q: %v", key, err)
					return
				}
				if err := l.Unlock(); err != nil {
					r.errorf("final Unlock of %q: %v", key, err)
				}
			})
		}
	}()
	r.wait(done)
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Bound)
	defer cancel()
	if err := m.Close(ctx); err != nil {
		r.t.Errorf("Close of the checking Manager: %v", err)
	}
}

// closeAll closes ms concurrently, each bounded, and checks they return nil.
func (r *run) closeAll(ms []*ctxlock.Manager) {
	r.t.Helper()
	r.parallel(len(ms), func(i int) {
		r.bounded(fmt.Sprintf("Close of m%d", i), func() {
			ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Bound)
			defer cancel()
			if err := ms[i].Close(ctx); err != nil {
				r.errorf("Close of m%d: %v", i, err)
			}
		})
	})
}

// mixed: Managers on one backend, goroutines doing random Lock, TryLock
// (random contexts), Do (callbacks that fail, panic, unlock), concurrent
// Unlocks and Health on shared and own Lock values, with a long TTL: every
// hold must end by Unlock alone, and every key be free afterwards.
func mixed(t *testing.T, b ctxlock.Backend, cfg Config) {
	r := newRun(t, b, cfg)
	ms := r.managers()
	ws := r.workers(ms, longTTL, false, false)
	r.parallel(len(ws), func(i int) {
		for range cfg.Ops {
			if r.stalled.Load() {
				return
			}
			ws[i].step()
		}
	})
	if r.stalled.Load() {
		// A key stays held until its lease lapses (a minute): reported.
		r.finish()
		return
	}
	r.keysFree(false)
	r.closeAll(ms)
	r.keysFree(true)
	r.finish()
}

// closeRace: as mixed, but every Manager is closed while its goroutines
// are still calling (Lock, TryLock, Do, Unlock, Health all race Close).
// Every call returns within the bound, Close returns nil, and once all
// are closed every key is free at once.
func closeRace(t *testing.T, b ctxlock.Backend, cfg Config) {
	r := newRun(t, b, cfg)
	ms := r.managers()
	ws := r.workers(ms, longTTL, true, false)
	var wg sync.WaitGroup
	// Each Manager closes once its goroutines have made a random number of
	// steps between them.
	for mi, m := range ms {
		var steps atomic.Int64
		closeAt := int64(1 + rand.IntN(cfg.Goroutines*cfg.Ops/4))
		closeNow := make(chan struct{})
		var once sync.Once
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-closeNow
			r.bounded(fmt.Sprintf("Close of m%d racing calls", mi), func() {
				ctx, cancel := context.WithTimeout(context.Background(), cfg.Bound)
				defer cancel()
				if err := m.Close(ctx); err != nil {
					r.errorf("Close of m%d: %v", mi, err)
				}
			})
		}()
		for _, w := range ws[mi*cfg.Goroutines : (mi+1)*cfg.Goroutines] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					if steps.Add(1) == closeAt {
						once.Do(func() { close(closeNow) })
					}
					if !w.step() {
						break
					}
				}
				once.Do(func() { close(closeNow) })
			}()
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	r.wait(done)
	r.keysFree(true)
	r.finish()
}

// shortTTL: as mixed, with a TTL of a few milliseconds, refreshed: holds
// end by Unlock or on their own (ErrExpired, ErrLost) with Unlock racing
// expiry; whichever way, holds never overlap.
func shortTTL(t *testing.T, b ctxlock.Backend, cfg Config) {
	r := newRun(t, b, cfg)
	r.lateness = startLatenessProbe()
	t.Cleanup(func() { r.lateness.stop() }) // if the run fails before finish
	ms := r.managers()
	ws := r.workers(ms, cfg.ShortTTL, false, true)
	r.parallel(len(ws), func(i int) {
		for range max(cfg.Ops/6, 1) { // holds last longer here
			ws[i].step()
		}
	})
	r.closeAll(ms)
	r.finish()
}

// checkExpiring checks the holds of a run whose holds expire on their own,
// and returns how many it checked. Such a hold ends when the Manager's
// scheduler sees its validity deadline pass and its holder then sees the
// closed channel: two goroutines that must run on time. The drift allowance
// (ShortTTL × ShortDrift + 2ms) is their margin: the lease lapses on the
// server no earlier than that after the deadline. When the machine is so
// loaded that this process's timers fire later than that, a hold can be seen
// open after the next one began without any defect. So an overlap is
// excused (logged) only up to what the lateness the probe measured while
// the earlier hold lasted (its validity deadline, the scheduler's timer and
// the holder's wake-up all fall in it) explains: twice the worst lateness
// then (the scheduler's timer, then the holder's wake-up) less the
// allowance; longer ones fail the test. A stall elsewhere in the run (one
// GC pause) excuses nothing. On a machine that is not overloaded that is
// nothing, and every overlap fails, as before. Tokens must increase
// regardless.
func (r *run) checkExpiring() int {
	r.t.Helper()
	late := r.lateness.stop()
	allowance := time.Duration(float64(r.cfg.ShortTTL)*r.cfg.ShortDrift) + 2*time.Millisecond
	holds := r.checker.Holds()
	bad, excused := judgeExpiring(holds, r.lateness.worstDuring, allowance)
	for _, m := range excused {
		r.t.Log(m)
	}
	for _, m := range bad {
		r.t.Error(m)
	}
	r.t.Logf("timers ran at most %v late during the run (%d sleeps over %v late): overlaps up to %v excused where that happened", late, len(r.lateness.late), probeKeep, max(2*late-allowance, 0))
	return len(holds)
}

// judgeExpiring compares each key's holds in the order they started: an
// overlap is excused (reported in excused) when it is no longer than twice
// lateDuring (the worst lateness of this process's timers measured between
// from and to) over the earlier hold, less allowance; else, and for every
// token that does not increase, it is reported in bad.
func judgeExpiring(holds []locktest.Hold, lateDuring func(from, to time.Time) time.Duration, allowance time.Duration) (bad, excused []string) {
	byKey := map[string][]locktest.Hold{}
	for _, h := range holds {
		byKey[h.Key] = append(byKey[h.Key], h)
	}
	for key, hs := range byKey {
		slices.SortFunc(hs, func(a, b locktest.Hold) int { return a.Start.Compare(b.Start) })
		for i := 1; i < len(hs); i++ {
			prev, cur := hs[i-1], hs[i]
			if over := prev.End.Sub(cur.Start); over > 0 {
				late := lateDuring(prev.Start, prev.End)
				ok := max(2*late-allowance, 0)
				msg := fmt.Sprintf("key %q: hold of %s (token %d) started %v before the hold of %s (token %d) ended",
					key, cur.Owner, cur.Token, over, prev.Owner, prev.Token)
				if over > ok {
					bad = append(bad, fmt.Sprintf("%s (timers ran at most %v late meanwhile, which explains overlaps up to %v)", msg, late, ok))
				} else {
					excused = append(excused, fmt.Sprintf("%s: explained by this process's timers running up to %v late meanwhile (a loaded machine: up to %v), not counted", msg, late, ok))
				}
			}
			if cur.Token <= prev.Token {
				bad = append(bad, fmt.Sprintf("key %q: token %d of %s does not increase on token %d of %s",
					key, cur.Token, cur.Owner, prev.Token, prev.Owner))
			}
		}
	}
	return bad, excused
}

// latenessProbe measures how late this process's timers fire: a goroutine
// (its own, stopped by stop) that sleeps a millisecond at a time and
// records the worst overshoot, and when each overshoot of more than
// probeKeep happened.
type latenessProbe struct {
	quit, done chan struct{}
	once       sync.Once
	worst      time.Duration
	late       []lateSleep // in time order
}

// lateSleep is one of the probe's sleeps that overshot by more than
// probeKeep.
type lateSleep struct {
	from, to time.Time
	late     time.Duration
}

// probeKeep: shorter overshoots are not kept (they excuse nothing: the
// drift allowance is far longer).
const probeKeep = time.Millisecond

func startLatenessProbe() *latenessProbe {
	p := &latenessProbe{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTimer(time.Millisecond)
		defer tick.Stop()
		for {
			t0 := time.Now()
			tick.Reset(time.Millisecond)
			select {
			case <-p.quit:
				return
			case <-tick.C:
			}
			t1 := time.Now()
			p.record(t0, t1, t1.Sub(t0)-time.Millisecond)
		}
	}()
	return p
}

// record notes a sleep from t0 to t1 that overshot by late.
func (p *latenessProbe) record(t0, t1 time.Time, late time.Duration) {
	p.worst = max(p.worst, late)
	if late > probeKeep {
		p.late = append(p.late, lateSleep{t0, t1, late})
	}
}

// worstDuring returns the worst lateness of the sleeps that overlapped
// from..to (the probe stopped): a stall elsewhere in the run explains
// nothing about what happened then.
func (p *latenessProbe) worstDuring(from, to time.Time) time.Duration {
	var w time.Duration
	for _, s := range p.late {
		if !s.from.After(to) && !s.to.Before(from) {
			w = max(w, s.late)
		}
	}
	return w
}

// stop ends the probe and returns the worst lateness it measured.
func (p *latenessProbe) stop() time.Duration {
	p.once.Do(func() { close(p.quit) })
	<-p.done
	return p.worst
}
