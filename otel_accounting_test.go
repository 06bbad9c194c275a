package ctxlock_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.opentelemetry.io/otel/codes"

	"github.com/ctxlock/ctxlock"
	ctxlockotel "github.com/ctxlock/ctxlock/otel"
)

// Every hold ends, whatever ended it (Unlock, Do with a panicking fn, loss,
// expiry, Close): afterwards ctxlock.held and ctxlock.release.pending read 0.
func TestOtelHeldAndPendingReturnToZero(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newOtelRig(t, 3)
		var wg sync.WaitGroup
		for w := range 12 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				m := r.ms[w%3]
				key := fmt.Sprintf("k%d", w%4)
				l := m.NewLock(key, ctxlock.WithTTL(2*time.Second), ctxlock.WithRefreshInterval(500*time.Millisecond))
				for i := range 30 {
					ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.IntN(3000))*time.Millisecond)
					switch (w + i) % 5 {
					case 0:
						if _, err := l.Lock(ctx); err == nil {
							time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
							l.Unlock()
						}
					case 1:
						if ok, _, _ := l.TryLock(ctx); ok {
							time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
							l.Unlock()
						}
					case 2:
						func() {
							defer func() { recover() }()
							ctxlock.Do(ctx, l, func(context.Context) error {
								time.Sleep(time.Duration(rand.IntN(100)) * time.Millisecond)
								panic("user")
							})
						}()
					case 3:
						if _, err := l.Lock(ctx); err == nil {
							r.be.Evict(key)
							time.Sleep(time.Second)
						}
					case 4:
						if _, err := l.Lock(ctx); err == nil && i == 29 {
							// left held: Close ends it
							cancel()
							return
						}
						l.Unlock()
					}
					cancel()
				}
			}()
		}
		wg.Wait()
		r.be.SetUnavailable(true)
		time.Sleep(3 * time.Second)
		r.be.SetUnavailable(false)
		for _, m := range r.ms {
			if err := m.Close(context.Background()); err != nil {
				t.Error(err)
			}
		}
		rm := r.collect()
		defer r.close()
		if got := otelSum(t, rm, ctxlockotel.MetricHeld); got != 0 {
			t.Errorf("%s = %d after Close, want 0", ctxlockotel.MetricHeld, got)
		}
		if got := otelSum(t, rm, ctxlockotel.MetricReleasePending); got != 0 {
			t.Errorf("%s = %d after Close, want 0", ctxlockotel.MetricReleasePending, got)
		}
		n, _ := otelHist(t, rm, ctxlockotel.MetricHoldDuration)
		t.Logf("holds ended: %d, lost: %d, contention: %d", n, otelSum(t, rm, ctxlockotel.MetricHoldLost), otelSum(t, rm, ctxlockotel.MetricContention))
	})
}

// A Lock whose context is cancelled with a cause is canceled, not failed,
// whatever the cause: the cause is the caller's (here, as inside Do, the loss
// of another lock), not a fault of this call's backend. Its span stays Unset
// and its metrics get no error.type.
func TestOtelCanceledWithCtxlockCauseIsNotAFault(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newOtelRig(t, 2)
		defer r.close()
		holder := r.ms[0].NewLock("orders")
		if _, err := holder.Lock(context.Background()); err != nil {
			t.Fatal(err)
		}
		for _, early := range []bool{false, true} {
			ctx, cancel := context.WithCancelCause(context.Background())
			cause := fmt.Errorf("ctxlock: hold of %q ended early: %w", "outer", ctxlock.ErrLost)
			if early {
				cancel(cause)
			} else {
				go func() { time.Sleep(time.Second); cancel(cause) }()
			}
			if _, err := r.ms[1].NewLock("orders").Lock(ctx); !errors.Is(err, context.Canceled) {
				t.Fatalf("Lock = %v, want context.Canceled", err)
			}
			cancel(nil)
		}
		holder.Unlock()
		for _, s := range r.spans(ctxlockotel.SpanLock) {
			a := otelAttrs(s)
			if a[ctxlockotel.AttrOutcome].AsString() != ctxlockotel.OutcomeCanceled {
				continue
			}
			if _, typed := a[ctxlockotel.AttrErrorType]; s.Status().Code != codes.Unset || typed {
				t.Errorf("canceled Lock span: status %v, error.type %q; want Unset and none", s.Status(), a[ctxlockotel.AttrErrorType].AsString())
			}
		}
		rm := r.collect()
		if n, _ := otelHist(t, rm, ctxlockotel.MetricAcquireDuration, ctxlockotel.AttrOutcome.String(ctxlockotel.OutcomeCanceled)); n != 2 {
			t.Errorf("%s (canceled): count %d, want 2", ctxlockotel.MetricAcquireDuration, n)
		}
		if n, _ := otelHist(t, rm, ctxlockotel.MetricAcquireDuration, ctxlockotel.AttrErrorType.String("ctxlock.lock_lost")); n != 0 {
			t.Errorf("%s: %d canceled calls with error.type ctxlock.lock_lost, want 0", ctxlockotel.MetricAcquireDuration, n)
		}
	})
}

// slowLogHandler is a slog handler that takes a second per record.
type slowLogHandler struct{}

func (slowLogHandler) Enabled(context.Context, slog.Level) bool  { return true }
func (slowLogHandler) Handle(context.Context, slog.Record) error { time.Sleep(time.Second); return nil }
func (h slowLogHandler) WithAttrs([]slog.Attr) slog.Handler      { return h }
func (h slowLogHandler) WithGroup(string) slog.Handler           { return h }

// The ctxlock.hold span covers the hold, from acquisition to loss, and its
// event is at the moment of loss, even when recording it is delayed (here
// by a slow logger, whose warning about the loss is logged first).
func TestOtelHoldSpanTimedAtEndNotAtRecording(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newOtelRig(t, 0)
		r.ms = append(r.ms, ctxlock.NewManager(r.be, ctxlock.WithTracerProvider(r.tp),
			ctxlock.WithMeterProvider(r.mp), ctxlock.WithLogger(slog.New(slowLogHandler{}))))
		defer r.close()
		l := r.ms[0].NewLock("orders", ctxlock.WithTTL(3*time.Second), ctxlock.WithRefreshInterval(time.Second))
		expired, err := l.Lock(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond)
		r.be.Evict("orders")
		<-expired
		lostAt := time.Now()
		time.Sleep(5 * time.Second)
		synctest.Wait()
		locks, holds := r.spans(ctxlockotel.SpanLock), r.spans(ctxlockotel.SpanHold)
		if len(locks) != 1 || len(holds) != 1 {
			t.Fatalf("%d lock and %d hold spans, want 1 and 1", len(locks), len(holds))
		}
		h := holds[0]
		if !h.StartTime().Equal(locks[0].EndTime()) || !h.EndTime().Equal(lostAt) {
			t.Errorf("hold span from %v to %v after the Lock span ended; want from 0 to %v (the loss)",
				h.StartTime().Sub(locks[0].EndTime()), h.EndTime().Sub(locks[0].EndTime()), lostAt.Sub(locks[0].EndTime()))
		}
		for _, e := range h.Events() {
			if e.Name == ctxlockotel.EventHoldLost && !e.Time.Equal(lostAt) {
				t.Errorf("%s event %v after the loss, want at it", e.Name, e.Time.Sub(lostAt))
			}
		}
	})
}
