package ctxlock_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// slowHandler is a slog handler whose every record takes a while (a
// synchronous log shipper over a slow link).
type slowHandler struct{ d time.Duration }

func (h slowHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h slowHandler) Handle(context.Context, slog.Record) error {
	time.Sleep(h.d)
	return nil
}
func (h slowHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h slowHandler) WithGroup(string) slog.Handler      { return h }

// A slow logger (user code) must not delay the expiry of other holds: the
// scheduler's end of one hold logs a warning, and the next hold's expiry
// channel still closes at its own validity deadline.
func TestSlowLoggerDoesNotDelayExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := ctxlock.NewManager(memory.New(), ctxlock.WithLogger(slog.New(slowHandler{time.Minute})))
		ctx := context.Background()
		const ttl1, ttl2 = time.Second, 2 * time.Second
		start := time.Now()
		l1 := m.NewLock("a", ctxlock.WithTTL(ttl1), ctxlock.WithoutRefresh())
		if _, err := l1.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		l2 := m.NewLock("b", ctxlock.WithTTL(ttl2), ctxlock.WithoutRefresh())
		exp2, err := l2.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		<-exp2
		drift := time.Duration(float64(ttl2)*ctxlock.DefaultDriftFactor) + 2*time.Millisecond
		if el := time.Since(start); el > ttl2-drift {
			t.Errorf("second hold expired after %v; want by its validity deadline %v", el, ttl2-drift)
		}
		if !errors.Is(l2.Err(), ctxlock.ErrExpired) {
			t.Errorf("Err: %v", l2.Err())
		}
		closeManager(t, m)
	})
}

// lateExtend is a memory backend whose Extend reaches the store, but whose
// answer arrives only at the call's deadline (the caller's validity
// deadline), whatever its context says.
type lateExtend struct{ *memory.Backend }

func (b lateExtend) Extend(ctx context.Context, leases []ctxlock.Lease, ttl time.Duration) []error {
	errs := b.Backend.Extend(context.Background(), leases, ttl)
	if dl, ok := ctx.Deadline(); ok {
		time.Sleep(time.Until(dl))
	}
	return errs
}

// A refresh whose answer arrives once the validity deadline has passed does
// not revive the hold: the expiry channel closes at the deadline, with
// ErrExpired, whichever of the scheduler and the worker runs first.
func TestLateRefreshAnswerDoesNotReviveHold(t *testing.T) {
	for i := range 50 {
		synctest.Test(t, func(t *testing.T) {
			m := ctxlock.NewManager(lateExtend{memory.New()})
			defer closeManager(t, m)
			const ttl = 3 * time.Second
			drift := time.Duration(float64(ttl)*ctxlock.DefaultDriftFactor) + 2*time.Millisecond
			start := time.Now()
			l := m.NewLock("k", ctxlock.WithTTL(ttl), ctxlock.WithRefreshInterval(2*time.Second))
			exp, err := l.Lock(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			// The first refresh is sent at +1.5s (batching window), its
			// answer arrives at the validity deadline, +2.968s.
			time.Sleep(ttl - drift)
			synctest.Wait()
			select {
			case <-exp:
			default:
				t.Fatalf("run %d: hold still valid at +%v, past its validity deadline, revived by a refresh answered then", i, time.Since(start))
			}
			if !errors.Is(l.Err(), ctxlock.ErrExpired) {
				t.Fatalf("Err: %v", l.Err())
			}
		})
	}
}
