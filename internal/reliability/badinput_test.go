package reliability_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// Bad input for the public entry points that backends/locktest's BadInput
// case does not cover, on the memory backend, and a Backend that answers
// garbage. The rule everywhere: a clear error, no panic, no lost lock state.

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func memManager(t *testing.T, b ctxlock.Backend, opts ...ctxlock.ManagerOption) *ctxlock.Manager {
	t.Helper()
	m := ctxlock.NewManager(b, opts...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = m.Close(ctx)
	})
	return m
}

func mustLock(t *testing.T, l ctxlock.Lock) <-chan struct{} {
	t.Helper()
	exp, err := l.Lock(ctxT(t))
	if err != nil {
		t.Fatalf("Lock(%q): %v", l.Key(), err)
	}
	return exp
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestBadInput_CloseTwiceAndConcurrently(t *testing.T) {
	m := ctxlock.NewManager(memory.New())
	l := m.NewLock("k")
	exp := mustLock(t, l)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = m.Close(ctx) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Close %d: %v", i, err)
		}
	}
	if err := m.Close(ctx); err != nil {
		t.Errorf("Close after Close: %v", err)
	}
	if !isClosed(exp) || !errors.Is(l.Err(), ctxlock.ErrClosed) {
		t.Errorf("hold after Close: channel closed %v, Err %v; want closed, ErrClosed", isClosed(exp), l.Err())
	}
}

func TestBadInput_UseAfterClose(t *testing.T) {
	b := memory.New()
	m := ctxlock.NewManager(b)
	held := m.NewLock("held")
	mustLock(t, held)
	ctx := ctxT(t)
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := held.Unlock(); !errors.Is(err, ctxlock.ErrNotHeld) {
		t.Errorf("Unlock of a hold Close ended: %v; want ErrNotHeld", err)
	}
	if tok := held.Token(); tok != 0 {
		t.Errorf("Token after Close: %d", tok)
	}
	for _, l := range []ctxlock.Lock{held, m.NewLock("fresh")} {
		if _, err := l.Lock(ctx); !errors.Is(err, ctxlock.ErrClosed) {
			t.Errorf("%s: Lock after Close: %v; want ErrClosed", l.Key(), err)
		}
		if ok, exp, err := l.TryLock(ctx); ok || exp != nil || !errors.Is(err, ctxlock.ErrClosed) {
			t.Errorf("%s: TryLock after Close: (%v, %v, %v); want ErrClosed", l.Key(), ok, exp, err)
		}
		ran := false
		if err := ctxlock.Do(ctx, l, func(context.Context) error { ran = true; return nil }); !errors.Is(err, ctxlock.ErrClosed) || ran {
			t.Errorf("%s: Do after Close: %v (fn ran %v); want ErrClosed", l.Key(), err, ran)
		}
	}
	if _, err := m.Health(ctx); !errors.Is(err, ctxlock.ErrClosed) {
		t.Errorf("Health after Close: %v", err)
	}
	// The hold was released: the key is free for another Manager.
	other := memManager(t, b)
	if ok, _, err := other.NewLock("held").TryLock(ctx); !ok || err != nil {
		t.Errorf("key of a hold Close ended is not free: (%v, %v)", ok, err)
	}
}

func TestBadInput_CloseAbandonsPendingReleases(t *testing.T) {
	b := memory.New()
	m := ctxlock.NewManager(b)
	l := m.NewLock("k", ctxlock.WithTTL(time.Minute))
	mustLock(t, l)
	b.SetUnavailable(true)
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := m.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "abandoned") {
		t.Errorf("Close with a release it cannot confirm: %v; want DeadlineExceeded saying what was abandoned", err)
	}
	b.SetUnavailable(false)
	if err := m.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestBadInput_UnlockRaces(t *testing.T) {
	m := memManager(t, memory.New())
	l := m.NewLock("k")
	for round := 0; round < 20; round++ {
		exp := mustLock(t, l)
		var (
			wg  sync.WaitGroup
			ok  atomic.Int32
			bad atomic.Int32
		)
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				switch err := l.Unlock(); {
				case err == nil:
					ok.Add(1)
				case !errors.Is(err, ctxlock.ErrNotHeld):
					bad.Add(1)
				}
			}()
		}
		wg.Wait()
		if ok.Load() != 1 || bad.Load() != 0 || !isClosed(exp) {
			t.Fatalf("8 concurrent Unlocks: %d succeeded, %d odd errors, channel closed %v; want exactly one", ok.Load(), bad.Load(), isClosed(exp))
		}
	}
	// Unlock after the hold expired on its own.
	l2 := m.NewLock("short", ctxlock.WithTTL(50*time.Millisecond), ctxlock.WithoutRefresh())
	exp := mustLock(t, l2)
	<-exp
	if err := l2.Unlock(); !errors.Is(err, ctxlock.ErrNotHeld) || errors.Is(err, ctxlock.ErrLockActionRequested) {
		t.Errorf("Unlock after expiry: %v; want ErrNotHeld only", err)
	}
	if !errors.Is(l2.Err(), ctxlock.ErrExpired) {
		t.Errorf("Err after expiry: %v", l2.Err())
	}
}

func TestBadInput_NotReentrant(t *testing.T) {
	m := memManager(t, memory.New())
	l := m.NewLock("k")
	mustLock(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := l.Lock(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Lock of a value this goroutine holds: %v; want it to wait until ctx ends", err)
	}
	if ok, exp, err := l.TryLock(ctxT(t)); ok || exp != nil || err != nil {
		t.Errorf("TryLock of a held value: (%v, %v, %v)", ok, exp, err)
	}
	cctx, ccancel := context.WithCancelCause(context.Background())
	boom := errors.New("shutting down")
	ccancel(boom)
	if _, err := m.NewLock("other").Lock(cctx); !errors.Is(err, context.Canceled) || !errors.Is(err, boom) {
		t.Errorf("Lock with a cancelled ctx: %v; want Canceled and its cause", err)
	}
	if err := l.Unlock(); err != nil {
		t.Error(err)
	}
}

func TestBadInput_NilsAndOddOptions(t *testing.T) {
	m := memManager(t, memory.New(), nil, ctxlock.WithWorkers(-3), ctxlock.WithNamespace(""), ctxlock.WithLogger(nil),
		ctxlock.WithDefaultLockOptions(nil))
	ctx := ctxT(t)
	l := m.NewLock("k", nil, ctxlock.WithTracer(nil))
	mustLock(t, l)
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := ctxlock.Do(ctx, nil, func(context.Context) error { return nil }); !errors.Is(err, ctxlock.ErrInvalidOption) {
		t.Errorf("Do(nil Lock): %v", err)
	}
	//lint:ignore SA1012 passing a nil context is the point
	if err := ctxlock.Do(nil, l, func(context.Context) error { return nil }); !errors.Is(err, ctxlock.ErrNilContext) { //nolint:staticcheck
		t.Errorf("Do(nil ctx): %v", err)
	}
	for name, opts := range map[string][]ctxlock.LockOption{
		"NaN drift":      {ctxlock.WithDriftFactor(math.NaN())},
		"+Inf drift":     {ctxlock.WithDriftFactor(math.Inf(1))},
		"TTL over 1y":    {ctxlock.WithTTL(366 * 24 * time.Hour)},
		"max TTL":        {ctxlock.WithTTL(math.MaxInt64)},
		"min TTL":        {ctxlock.WithTTL(math.MinInt64)},
		"negative retry": {ctxlock.WithRetryDelay(-1)},
		"drift 0.5":      {ctxlock.WithDriftFactor(0.5)},
		"refresh 1ns under TTL with drift": {ctxlock.WithTTL(time.Second), ctxlock.WithDriftFactor(0.2),
			ctxlock.WithRefreshInterval(time.Second - time.Nanosecond)},
	} {
		l := m.NewLock("k", opts...)
		if _, err := l.Lock(ctx); !errors.Is(err, ctxlock.ErrInvalidOption) {
			t.Errorf("%s: Lock: %v; want ErrInvalidOption", name, err)
		}
	}
	// The zero LockOptions are invalid; the defaults are valid.
	var zero ctxlock.LockOptions
	if err := zero.Validate(); !errors.Is(err, ctxlock.ErrInvalidOption) {
		t.Errorf("zero LockOptions: %v", err)
	}
	if err := ctxlock.DefaultLockOptions().Validate(); err != nil {
		t.Errorf("DefaultLockOptions: %v", err)
	}
	if ctxlock.Unavailable(nil) != nil {
		t.Error("Unavailable(nil) != nil")
	}
	if s := (&ctxlock.HeldError{}).Error(); s == "" {
		t.Error("empty HeldError message")
	}
	// A WithoutRefresh lock is valid with a refresh interval that would not be.
	if _, err := m.NewLock("k2", ctxlock.WithTTL(time.Second), ctxlock.WithRefreshInterval(time.Hour), ctxlock.WithoutRefresh()).Lock(ctx); err != nil {
		t.Errorf("WithoutRefresh after an over-long interval: %v", err)
	}
}

// garbage is a Backend that answers garbage on demand. Its zero switches pass
// every call to the memory backend.
type garbage struct {
	*memory.Backend
	acquire  atomic.Value // func(ctxlock.AcquireRequest, ctxlock.Lease, error) (ctxlock.Lease, error)
	extend   atomic.Value // func(n int) []error; the real Extend is not performed
	release  atomic.Value // func(n int) []error; the real Release is not performed
	watch    atomic.Int32 // 1: a closed channel; 2: nil channel and nil stop
	health   atomic.Bool
	acquires atomic.Int64
}

func (g *garbage) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	g.acquires.Add(1)
	l, err := g.Backend.Acquire(ctx, req)
	if f, _ := g.acquire.Load().(func(ctxlock.AcquireRequest, ctxlock.Lease, error) (ctxlock.Lease, error)); f != nil {
		return f(req, l, err)
	}
	return l, err
}

func (g *garbage) Extend(ctx context.Context, leases []ctxlock.Lease, ttl time.Duration) []error {
	if f, _ := g.extend.Load().(func(int) []error); f != nil {
		return f(len(leases))
	}
	return g.Backend.Extend(ctx, leases, ttl)
}

func (g *garbage) Release(ctx context.Context, leases []ctxlock.Lease) []error {
	if f, _ := g.release.Load().(func(int) []error); f != nil {
		return f(len(leases))
	}
	return g.Backend.Release(ctx, leases)
}

func (g *garbage) Watch(key string) (<-chan struct{}, func()) {
	switch g.watch.Load() {
	case 1:
		ch := make(chan struct{})
		close(ch)
		return ch, func() {}
	case 2:
		return nil, nil
	}
	return g.Backend.Watch(key)
}

func (g *garbage) Health(ctx context.Context) ([]string, error) {
	if g.health.Load() {
		return []string{"\x00garbage\xff"}, errors.New("garbage health")
	}
	return g.Backend.Health(ctx)
}

func TestBadInput_GarbageAcquire(t *testing.T) {
	permanent := errors.New("permanent backend failure")
	for _, tc := range []struct {
		name string
		f    func(ctxlock.AcquireRequest, ctxlock.Lease, error) (ctxlock.Lease, error)
		want error // nil: any error that is not ErrHeld
	}{
		{"wrong owner", func(_ ctxlock.AcquireRequest, l ctxlock.Lease, err error) (ctxlock.Lease, error) {
			l.Owner = "someone else"
			return l, err
		}, nil},
		{"wrong key", func(_ ctxlock.AcquireRequest, l ctxlock.Lease, err error) (ctxlock.Lease, error) {
			l.Key += "-other"
			return l, err
		}, nil},
		{"empty lease", func(ctxlock.AcquireRequest, ctxlock.Lease, error) (ctxlock.Lease, error) {
			return ctxlock.Lease{}, nil
		}, nil},
		{"permanent error after acquiring", func(ctxlock.AcquireRequest, ctxlock.Lease, error) (ctxlock.Lease, error) {
			return ctxlock.Lease{}, permanent
		}, permanent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &garbage{Backend: memory.New()}
			m := memManager(t, g)
			other := memManager(t, g)
			ctx := ctxT(t)
			g.acquire.Store(tc.f)
			opts := []ctxlock.LockOption{ctxlock.WithTTL(time.Minute)}
			l := m.NewLock("k", opts...)
			_, err := l.Lock(ctx)
			if err == nil || errors.Is(err, ctxlock.ErrHeld) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("Lock: %v; want a clear error", err)
			}
			t.Logf("Lock: %v", err)
			if ok, _, err := l.TryLock(ctx); ok || err == nil {
				t.Fatalf("TryLock: (%v, %v); want an error", ok, err)
			}
			if l.Token() != 0 || l.Err() != nil {
				t.Errorf("after a refused lease: Token %d, Err %v", l.Token(), l.Err())
			}
			if err := l.Unlock(); !errors.Is(err, ctxlock.ErrNotHeld) {
				t.Errorf("Unlock: %v; want ErrNotHeld", err)
			}
			// Back to sane answers: the key is not left held for the TTL (a
			// minute), and this Lock value works again.
			g.acquire.Store(func(_ ctxlock.AcquireRequest, l ctxlock.Lease, err error) (ctxlock.Lease, error) { return l, err })
			octx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			ol := other.NewLock("k", opts...)
			if _, err := ol.Lock(octx); err != nil {
				if tc.want == permanent {
					// The backend did acquire but said it failed permanently:
					// the Manager had no reason to release it. That backend broke
					// the contract (an unknown outcome must match ErrUnavailable).
					t.Logf("as documented, after a permanent error the lease is left for its TTL: %v", err)
					return
				}
				t.Fatalf("key still held after the garbage lease was refused: %v", err)
			}
			_ = ol.Unlock()
			mustLock(t, l)
			if err := l.Unlock(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestBadInput_GarbageBatchResults(t *testing.T) {
	shapes := map[string]func(n int) []error{
		"empty":  func(int) []error { return []error{} },
		"short":  func(n int) []error { return make([]error, n-1) },
		"long":   func(n int) []error { return make([]error, n+3) },
		"random": func(n int) []error { return []error{errors.New("?"), nil, errors.New("!")}[:min(3, n+1)] },
	}
	for name, f := range shapes {
		t.Run("extend "+name, func(t *testing.T) {
			g := &garbage{Backend: memory.New()}
			m := memManager(t, g)
			const short = 200 * time.Millisecond
			l := m.NewLock("k", ctxlock.WithTTL(short))
			exp := mustLock(t, l)
			g.extend.Store(f)
			select {
			case <-exp:
			case <-time.After(5 * time.Second):
				t.Fatal("hold survived refreshes whose results cannot be trusted")
			}
			if !errors.Is(l.Err(), ctxlock.ErrExpired) {
				t.Errorf("Err: %v; want ErrExpired", l.Err())
			}
			t.Logf("Err: %v", l.Err())
			g.extend.Store((func(int) []error)(nil)) // the real Extend again
			mustLock(t, l)
			if err := l.Unlock(); err != nil {
				t.Fatal(err)
			}
		})
		t.Run("release "+name, func(t *testing.T) {
			g := &garbage{Backend: memory.New()}
			m := memManager(t, g)
			other := memManager(t, g)
			opts := []ctxlock.LockOption{ctxlock.WithTTL(time.Minute)}
			l := m.NewLock("k", opts...)
			mustLock(t, l)
			g.release.Store(f)
			if err := l.Unlock(); err != nil {
				t.Fatal(err)
			}
			ctx := ctxT(t)
			if conds, _ := m.Health(ctx); !strings.Contains(strings.Join(conds, ","), "pending releases") {
				t.Logf("health while the release is unconfirmed: %q", conds)
			}
			time.Sleep(100 * time.Millisecond)        // a few garbage answers (waiting for time to pass)
			g.release.Store((func(int) []error)(nil)) // the real Release again
			octx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if _, err := other.NewLock("k", opts...).Lock(octx); err != nil {
				t.Fatalf("the release was lost after garbage answers: %v", err)
			}
		})
	}
}

func TestBadInput_GarbageWatchAndHealth(t *testing.T) {
	for _, mode := range []int32{1, 2} {
		name := map[int32]string{1: "closed channel", 2: "nil channel and stop"}[mode]
		t.Run(name, func(t *testing.T) {
			g := &garbage{Backend: memory.New()}
			g.watch.Store(mode)
			m := memManager(t, g)
			other := memManager(t, g)
			l := m.NewLock("k", ctxlock.WithTTL(time.Minute))
			mustLock(t, l)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			before := g.acquires.Load()
			if _, err := other.NewLock("k").Lock(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("waiting Lock: %v", err)
			}
			n := g.acquires.Load() - before
			t.Logf("%d acquire attempts in 300ms of waiting", n)
			if n > 100 {
				t.Errorf("%d acquire attempts in 300ms: a backend whose Watch channel is always ready makes waiters spin without backoff", n)
			}
		})
	}
	g := &garbage{Backend: memory.New()}
	g.health.Store(true)
	m := memManager(t, g)
	if conds, err := m.Health(ctxT(t)); err == nil || len(conds) == 0 {
		t.Errorf("Health with a failing backend: (%q, %v)", conds, err)
	}
}

func TestBadInput_DoWithPanickingFn(t *testing.T) {
	b := memory.New()
	m := memManager(t, b)
	other := memManager(t, b)
	l := m.NewLock("k", ctxlock.WithTTL(time.Minute))
	ctx := ctxT(t)
	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Error("fn's panic did not propagate")
			}
		}()
		_ = ctxlock.Do(ctx, l, func(context.Context) error { panic("boom") })
	}()
	octx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := other.NewLock("k").Lock(octx); err != nil {
		t.Errorf("after fn panicked inside Do the lock is still held: %v", err)
	}
}

func TestBadInput_DoWithNilFn(t *testing.T) {
	m := memManager(t, memory.New())
	l := m.NewLock("k")
	var err error
	func() {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		err = ctxlock.Do(ctxT(t), l, nil)
	}()
	if !errors.Is(err, ctxlock.ErrInvalidOption) {
		t.Errorf("Do with a nil fn: %v; want ErrInvalidOption", err)
	}
}
