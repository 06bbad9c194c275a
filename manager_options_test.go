package ctxlock_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// WithDefaultLockOptions applies to every Lock of the Manager, before the
// options given to NewLock (a later one wins), and an invalid default is an
// error from Lock and TryLock, not a panic, unless NewLock's options fix it.
func TestWithDefaultLockOptions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		mem := memory.New()
		m := ctxlock.NewManager(mem, ctxlock.WithDefaultLockOptions(
			ctxlock.WithTTL(2*time.Minute), ctxlock.WithMetadata("default-owner")),
			ctxlock.WithDefaultLockOptions(ctxlock.WithoutRefresh())) // both calls count
		defer closeManager(t, m)

		// The defaults: TTL 2m, metadata, no refresh (the hold expires).
		l := m.NewLock("a")
		start := time.Now()
		exp, err := l.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, meta, _, rem, ok := mem.Holder("a"); !ok || rem != 2*time.Minute || meta != "default-owner" {
			t.Errorf("lease (%v, remaining %v, metadata %q); want the default TTL 2m and metadata", ok, rem, meta)
		}
		<-exp
		if !errors.Is(l.Err(), ctxlock.ErrExpired) {
			t.Errorf("Err = %v; want ErrExpired (default WithoutRefresh)", l.Err())
		}
		if d := time.Since(start); d > 2*time.Minute || d < time.Minute {
			t.Errorf("hold expired after %v; want within the default TTL of 2m", d)
		}

		// NewLock's options win over the defaults.
		l2 := m.NewLock("b", ctxlock.WithTTL(time.Minute), ctxlock.WithRefreshInterval(0), ctxlock.WithMetadata("mine"))
		exp2, err := l2.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, meta, _, rem, ok := mem.Holder("b"); !ok || rem != time.Minute || meta != "mine" {
			t.Errorf("lease (%v, remaining %v, metadata %q); want NewLock's TTL 1m and metadata", ok, rem, meta)
		}
		select {
		case <-exp2:
			t.Fatalf("refreshed hold ended: %v", l2.Err())
		case <-time.After(5 * time.Minute):
		}
		l2.Unlock()
	})
}

func TestInvalidDefaultLockOptionIsAnError(t *testing.T) {
	ctx := context.Background()
	m := ctxlock.NewManager(memory.New(), ctxlock.WithDefaultLockOptions(ctxlock.WithTTL(-time.Second), nil))
	defer closeManager(t, m)
	l := m.NewLock("k")
	if _, err := l.Lock(ctx); !errors.Is(err, ctxlock.ErrInvalidOption) {
		t.Errorf("Lock: %v; want ErrInvalidOption", err)
	}
	if ok, _, err := l.TryLock(ctx); ok || !errors.Is(err, ctxlock.ErrInvalidOption) {
		t.Errorf("TryLock: %v, %v; want ErrInvalidOption", ok, err)
	}
	fixed := m.NewLock("k", ctxlock.WithTTL(time.Minute))
	if _, err := fixed.Lock(ctx); err != nil {
		t.Errorf("Lock with NewLock's valid TTL over the invalid default: %v", err)
	}
	fixed.Unlock()
}

// Health of a Manager made with a nil Backend fails with ErrNilBackend; of a
// closed Manager, at once with ErrClosed and a "manager closed" condition.
func TestHealthNilBackendAndClosed(t *testing.T) {
	ctx := context.Background()
	if _, err := ctxlock.NewManager(nil).Health(ctx); !errors.Is(err, ctxlock.ErrNilBackend) {
		t.Errorf("Health of NewManager(nil): %v; want ErrNilBackend", err)
	}
	mem := memory.New()
	m := ctxlock.NewManager(mem)
	if _, err := m.Health(ctx); err != nil {
		t.Fatalf("Health: %v", err)
	}
	closeManager(t, m)
	mem.SetLatency(time.Hour) // a closed Manager does not ask the backend
	conds, err := m.Health(ctx)
	if !errors.Is(err, ctxlock.ErrClosed) || !slices.Contains(conds, "manager closed") {
		t.Errorf("Health after Close = %q, %v; want \"manager closed\", ErrClosed", conds, err)
	}
}

// wrappedLock is a Lock of another package, decorating one of ours: Do
// watches its expiry channel with a goroutine.
type wrappedLock struct{ l ctxlock.Lock }

func (w wrappedLock) Key() string                                       { return w.l.Key() }
func (w wrappedLock) Lock(ctx context.Context) (<-chan struct{}, error) { return w.l.Lock(ctx) }
func (w wrappedLock) TryLock(ctx context.Context) (bool, <-chan struct{}, error) {
	return w.l.TryLock(ctx)
}
func (w wrappedLock) Unlock() error { return w.l.Unlock() }
func (w wrappedLock) Token() uint64 { return w.l.Token() }
func (w wrappedLock) Err() error    { return w.l.Err() }

// Do on a Lock implementation of another package keeps Do's contract: fn's
// context is cancelled with the reason when the hold is lost, Do returns an
// error wrapping ErrLost, and a hold that fn ends normally is unlocked.
func TestDoWithForeignLockImplementation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		mem := memory.New()
		m := ctxlock.NewManager(mem)
		defer closeManager(t, m)
		l := wrappedLock{m.NewLock("k", ctxlock.WithTTL(3*time.Second))}

		err := ctxlock.Do(ctx, l, func(fctx context.Context) error {
			mem.Evict("k") // data loss: the next refresh finds the lease gone
			<-fctx.Done()
			if cause := context.Cause(fctx); !errors.Is(cause, ctxlock.ErrLost) {
				t.Errorf("fn's context cause = %v; want ErrLost", cause)
			}
			return nil
		})
		if !errors.Is(err, ctxlock.ErrLost) {
			t.Errorf("Do after a loss = %v; want ErrLost", err)
		}

		err = ctxlock.Do(ctx, l, func(fctx context.Context) error {
			if _, _, _, _, ok := mem.Holder("k"); !ok {
				t.Error("key not held while fn runs")
			}
			return errors.New("fn failed")
		})
		if err == nil || err.Error() != "fn failed" {
			t.Errorf("Do = %v; want fn's error alone", err)
		}
		synctest.Wait()
		if _, _, _, _, ok := mem.Holder("k"); ok || l.Token() != 0 {
			t.Error("key still held after Do returned")
		}
		if !errors.Is(l.Err(), ctxlock.ErrUnlocked) {
			t.Errorf("Err after Do = %v; want ErrUnlocked", l.Err())
		}
	})
}

// Do with a nil Lock or function is an error matching ErrInvalidOption, not
// a panic.
func TestDoNilArguments(t *testing.T) {
	m := ctxlock.NewManager(memory.New())
	defer closeManager(t, m)
	ran := false
	if err := ctxlock.Do(context.Background(), nil, func(context.Context) error { ran = true; return nil }); !errors.Is(err, ctxlock.ErrInvalidOption) || ran {
		t.Errorf("Do(nil Lock) = %v (fn ran: %v); want ErrInvalidOption", err, ran)
	}
	l := m.NewLock("k")
	if err := ctxlock.Do(context.Background(), l, nil); !errors.Is(err, ctxlock.ErrInvalidOption) {
		t.Errorf("Do(nil fn) = %v; want ErrInvalidOption", err)
	}
	if l.Token() != 0 {
		t.Error("Do(nil fn) acquired the lock")
	}
}

// The seed API's default names are variables there, and here too (code
// that sets them keeps compiling); DefaultLockOptions reads them.
var _ = []*time.Duration{&ctxlock.DefaultTimeout, &ctxlock.DefaultRetryDelay, &ctxlock.DefaultAcquireTimeout}

func TestDefaultLockOptionsReadDefaults(t *testing.T) {
	o := ctxlock.DefaultLockOptions()
	if o.TTL != ctxlock.DefaultTimeout || o.RetryDelay != ctxlock.DefaultRetryDelay || o.AcquireTimeout != ctxlock.DefaultAcquireTimeout {
		t.Errorf("DefaultLockOptions = TTL %v, retry delay %v, acquire timeout %v; want %v, %v, %v",
			o.TTL, o.RetryDelay, o.AcquireTimeout, ctxlock.DefaultTimeout, ctxlock.DefaultRetryDelay, ctxlock.DefaultAcquireTimeout)
	}
	if ctxlock.DefaultTimeout != 10*time.Second || ctxlock.DefaultRetryDelay != 10*time.Millisecond || ctxlock.DefaultAcquireTimeout != 100*time.Millisecond {
		t.Errorf("defaults %v, %v, %v; want 10s, 10ms, 100ms", ctxlock.DefaultTimeout, ctxlock.DefaultRetryDelay, ctxlock.DefaultAcquireTimeout)
	}
}
