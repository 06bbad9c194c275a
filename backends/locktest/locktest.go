// Package locktest is the conformance suite of ctxlock backends: it exercises
// the whole contract of the Lock and LockManager API (guarantees, expiry
// channel, waiting, bad input) through Managers on the backend under test.
//
// Every backend's tests call Run:
//
//	func TestConformance(t *testing.T) {
//		locktest.Run(t, func(t *testing.T) ctxlock.Backend { return memory.New() })
//	}
//
// The factory is called once per leaf test; the Managers of that test share
// the Backend it returns, as separate processes would share a server.
// Backends that can run inside a testing/synctest bubble (in-process ones,
// such as memory's) run every leaf test in its own bubble: TTLs of hours pass
// in microseconds, and instants are asserted exactly (a waiter must get a
// released key at the instant of the release when the Backend's Watch
// notifies, and a lapsed one at the instant of the lapse when it reports
// HeldError.Remaining or notifies lapses; a Backend that does neither is
// polled, and is allowed the Manager's backoff, MaxRetryDelay, instead).
// Run finds out by asking
// one Backend from the factory whether it implements FakeTimeSafe (a
// wrapper that does not can pass WithFakeTime). Networked backends run the
// same cases in real time with a short TTL (WithTTL); WithRealTime makes an
// in-process one do so too.
//
// Some cases need to inject faults. They run when the Backend has the method:
//
//	SetUnavailable(down bool) // every call fails with ctxlock.ErrUnavailable while down
//	Evict(key string)          // the store forgets key, as on data loss
//
// and are skipped, with a message, otherwise. So are the cases that need an
// optional interface: ReleaserYieldsToOtherOwners needs
// ctxlock.ContentionReporter, and LocalWaitersFIFO runs only with fake time.
// Everything else is required of every Backend: besides the behaviour of
// Managers on it, the suite calls the Backend directly to check that batch
// calls answer one result per lease and that Extend refuses a TTL ≤ 0 with
// ctxlock.ErrInvalidOption (see ctxlock.Backend).
package locktest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
)

// Option configures Run.
type Option func(*config)

type config struct {
	fake, real bool
	ttl        time.Duration
}

// WithFakeTime runs every leaf test in a testing/synctest bubble. The factory
// is then called inside the bubble, and the Backend must use only time.Now,
// timers and goroutines of its own (no real network). It is the default for
// a Backend that implements FakeTimeSafe.
func WithFakeTime() Option { return func(c *config) { c.fake, c.real = true, false } }

// WithRealTime runs every leaf test on the real clock, even for a Backend
// that implements FakeTimeSafe.
func WithRealTime() Option { return func(c *config) { c.fake, c.real = false, true } }

// FakeTimeSafe is implemented by Backends that can run inside a
// testing/synctest bubble: all their state is in the process, and they use
// only time.Now, timers and goroutines of their own (memory.Backend).
type FakeTimeSafe interface {
	// FakeTimeSafe reports whether the Backend can run in a bubble.
	FakeTimeSafe() bool
}

// WithTTL sets the lease TTL the cases use (default 10s with fake time, 1s
// without). Cases that wait for a lease to lapse take about this long each.
func WithTTL(d time.Duration) Option { return func(c *config) { c.ttl = d } }

// Faulty is a Backend that tests can make unavailable.
type Faulty interface {
	// SetUnavailable makes every call fail with an error matching
	// ctxlock.ErrUnavailable (down true) or work again (false); leases keep
	// lapsing meanwhile.
	SetUnavailable(down bool)
}

// Evicter is a Backend that tests can make forget a key.
type Evicter interface {
	// Evict makes the backend forget key's lease (its fencing counter
	// survives), as data loss on a server would; the holder finds out at
	// its next refresh.
	Evict(key string)
}

// Run runs the conformance suite against the Backends that newBackend makes.
// Unless WithFakeTime or WithRealTime is given, it first calls newBackend
// once outside any bubble, to ask that Backend whether it is FakeTimeSafe,
// and closes it.
func Run(t *testing.T, newBackend func(t *testing.T) ctxlock.Backend, opts ...Option) {
	cfg := config{}
	for _, o := range opts {
		o(&cfg)
	}
	if !cfg.fake && !cfg.real {
		// A throwaway Backend, made outside any bubble, says whether the
		// factory's can run in one.
		probe := newBackend(t)
		if s, ok := probe.(FakeTimeSafe); ok && s.FakeTimeSafe() {
			cfg.fake = true
		}
		_ = probe.Close()
	}
	if cfg.ttl <= 0 {
		cfg.ttl = time.Second
		if cfg.fake {
			cfg.ttl = 10 * time.Second
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := func(t *testing.T) {
				e := &env{t: t, cfg: cfg, b: newBackend(t), prefix: randomPrefix()}
				c.run(e)
			}
			if cfg.fake {
				synctest.Test(t, body)
			} else {
				body(t)
			}
		})
	}
}

type testCase struct {
	name string
	run  func(e *env)
}

// env is one leaf test's world: a backend, the Managers on it, helpers.
type env struct {
	t      *testing.T
	cfg    config
	b      ctxlock.Backend
	prefix string
}

func randomPrefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "locktest/" + hex.EncodeToString(b[:]) + "/"
}

// key returns a key unique to this leaf test.
func (e *env) key(name string) string { return e.prefix + name }

// manager returns a new Manager on the test's backend, closed at cleanup.
func (e *env) manager(opts ...ctxlock.ManagerOption) *ctxlock.Manager {
	return e.managerOn(e.b, opts...)
}

// managerOn returns a new Manager on b, closed at cleanup.
func (e *env) managerOn(b ctxlock.Backend, opts ...ctxlock.ManagerOption) *ctxlock.Manager {
	m := ctxlock.NewManager(b, opts...)
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*e.cfg.ttl)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			e.t.Errorf("Manager.Close: %v", err)
		}
	})
	return m
}

// ttl returns the lock options every case uses, then opts.
func (e *env) opts(opts ...ctxlock.LockOption) []ctxlock.LockOption {
	base := []ctxlock.LockOption{ctxlock.WithTTL(e.cfg.ttl)}
	if !e.cfg.fake {
		// Real schedulers are late by milliseconds: give the validity window
		// room, so that expiry tests measure the contract, not the machine.
		// Likewise one attempt gets up to half the TTL, not the default
		// 100ms, which a loaded CI machine overran (a TryLock of a held
		// key then reports the backend unavailable instead of false).
		base = append(base, ctxlock.WithDriftFactor(0.1), ctxlock.WithAcquireTimeout(max(e.cfg.ttl/2, ctxlock.DefaultAcquireTimeout)))
	}
	return append(base, opts...)
}

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*e.cfg.ttl)
	e.t.Cleanup(cancel)
	return ctx
}

// settle lets background work (releases, refreshes) finish: with fake time it
// waits until every goroutine of the bubble is blocked; in real time it does
// nothing, and the cases use blocking calls instead.
func (e *env) settle() {
	if e.cfg.fake {
		synctest.Wait()
	}
}

func (e *env) mustLock(l ctxlock.Lock) <-chan struct{} {
	e.t.Helper()
	exp, err := l.Lock(e.ctx())
	if err != nil {
		e.t.Fatalf("Lock(%q): %v", l.Key(), err)
	}
	if exp == nil {
		e.t.Fatalf("Lock(%q) returned a nil expiry channel", l.Key())
	}
	return exp
}

func (e *env) mustUnlock(l ctxlock.Lock) {
	e.t.Helper()
	if err := l.Unlock(); err != nil {
		e.t.Fatalf("Unlock(%q): %v", l.Key(), err)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// notifies reports whether the backend notifies releases (Backend.Watch
// returns a channel). A backend that cannot (a nil channel) is polled, so its
// waiters are woken by the Manager's backoff, not at the instant of a release.
func (e *env) notifies() bool {
	ch, stop := e.b.Watch(e.key("locktest-watch-probe"))
	if stop != nil {
		stop()
	}
	return ch != nil
}

func (e *env) faulty() Faulty {
	f, ok := e.b.(Faulty)
	if !ok {
		e.t.Skipf("backend %T cannot be made unavailable (no SetUnavailable method)", e.b)
	}
	return f
}

func (e *env) evicter() Evicter {
	f, ok := e.b.(Evicter)
	if !ok {
		e.t.Skipf("backend %T cannot evict keys (no Evict method)", e.b)
	}
	return f
}

// drift is the validity allowance the cases' options give a lock.
func (e *env) drift() time.Duration {
	o := ctxlock.DefaultLockOptions()
	o.Apply(e.opts()...)
	return time.Duration(float64(o.TTL)*o.DriftFactor) + 2*time.Millisecond
}
