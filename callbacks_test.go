package ctxlock_test

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
	ctxlockotel "github.com/ctxlock/ctxlock/otel"
)

// panickyTracerProvider's spans panic on AddEvent (the "ctxlock.contended"
// event), or with onEnd on End, as a buggy exporter or sampler hook might:
// every time, or, with once set, the first time only.
type panickyTracerProvider struct {
	tracenoop.TracerProvider
	once  *atomic.Bool // nil: every time
	onEnd bool
}

func (p panickyTracerProvider) Tracer(string, ...trace.TracerOption) trace.Tracer {
	return panickyTracer{once: p.once, onEnd: p.onEnd}
}

type panickyTracer struct {
	tracenoop.Tracer
	once  *atomic.Bool
	onEnd bool
}

func (t panickyTracer) Start(ctx context.Context, _ string, _ ...trace.SpanStartOption) (context.Context, trace.Span) {
	return ctx, panickySpan{once: t.once, onEnd: t.onEnd}
}

type panickySpan struct {
	tracenoop.Span
	once  *atomic.Bool
	onEnd bool
}

func (s panickySpan) panic(what string) {
	if s.once == nil || s.once.CompareAndSwap(false, true) {
		panic("tracer: " + what)
	}
}

func (s panickySpan) AddEvent(string, ...trace.EventOption) {
	if !s.onEnd {
		s.panic("AddEvent")
	}
}

func (s panickySpan) End(...trace.SpanEndOption) {
	if s.onEnd {
		s.panic("End")
	}
}

// panickyMeterProvider's ctxlock.release.pending counter panics on its first
// increment once armed (a release queued), not on the decrements that
// workers record as releases settle; with decrement, on its first
// decrement instead (a release settled).
type panickyMeterProvider struct {
	metricnoop.MeterProvider
	armed     *atomic.Bool
	decrement bool
}

func (p panickyMeterProvider) Meter(string, ...metric.MeterOption) metric.Meter {
	return panickyMeter{p: p}
}

type panickyMeter struct {
	metricnoop.Meter
	p panickyMeterProvider
}

func (m panickyMeter) Int64UpDownCounter(name string, _ ...metric.Int64UpDownCounterOption) (metric.Int64UpDownCounter, error) {
	if name == ctxlockotel.MetricReleasePending {
		return panickyCounter{p: m.p}, nil
	}
	return metricnoop.Int64UpDownCounter{}, nil
}

type panickyCounter struct {
	metricnoop.Int64UpDownCounter
	p panickyMeterProvider
}

func (c panickyCounter) Add(_ context.Context, incr int64, _ ...metric.AddOption) {
	if (incr < 0) == c.p.decrement && incr != 0 && c.p.armed.CompareAndSwap(true, false) {
		panic("meter: Add")
	}
}

// recovered runs f and returns what it panicked with.
func recovered(f func()) (p any) {
	defer func() { p = recover() }()
	f()
	return nil
}

// requireMutexFree fails t when a panic left m's mutex locked, after
// unlocking it so that the test can clean up.
func requireMutexFree(t *testing.T, m *ctxlock.Manager) {
	t.Helper()
	// The scheduler and its workers take the mutex briefly; a goroutine
	// blocked on a mutex is not durably blocked, so synctest.Wait cannot
	// tell them apart from a mutex that stays locked.
	for range 10000 {
		if ctxlock.MutexFree(m) {
			return
		}
		runtime.Gosched()
	}
	{
		ctxlock.ForceUnlock(m)
		_ = m.Close(context.Background())
		t.Fatal("a panic in user instrumentation left the Manager's mutex locked: every later call on the Manager blocks for ever")
	}
}

// A tracer that panics as a Lock call queues behind a local holder must not
// leave the Manager's mutex locked, nor the key's local queue blocked by the
// call that panicked.
func TestPanickingTracerDoesNotWedgeManager(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := memory.New()
		defer b.Close()
		m := ctxlock.NewManager(b, ctxlock.WithTracerProvider(panickyTracerProvider{}))
		ctx := context.Background()
		l1 := m.NewLock("k")
		if _, err := l1.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		if p := recovered(func() { _, _ = m.NewLock("k").Lock(ctx) }); p == nil {
			t.Fatal("the tracer's panic did not reach the Lock caller")
		}
		requireMutexFree(t, m)
		defer closeManager(t, m)

		if err := l1.Unlock(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // its release settled: the next Lock has no reason to queue
		// The key is free: the next Lock must not queue behind the call
		// that panicked.
		locksFreeKey(t, m.NewLock("k"), "Lock of the free key after the panic")
	})
}

// A meter that panics as Unlock counts the release it queues must not leave
// the Manager's mutex locked.
func TestPanickingMeterDoesNotWedgeManager(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := scheduledReleases{memory.New()} // Unlock queues its release
		defer b.Close()
		armed := new(atomic.Bool)
		m := ctxlock.NewManager(b, ctxlock.WithMeterProvider(panickyMeterProvider{armed: armed}))
		ctx := context.Background()
		l := m.NewLock("k")
		if _, err := l.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		armed.Store(true)
		if p := recovered(func() { _ = l.Unlock() }); p == nil {
			t.Fatal("the meter's panic did not reach the Unlock caller")
		}
		requireMutexFree(t, m)
		defer closeManager(t, m)
		if _, err := l.Lock(ctx); err != nil {
			t.Fatalf("Lock after the panic: %v", err)
		}
		_ = l.Unlock()
	})
}

// A Lock call whose tracer panics as it queues behind a local holder must
// not leave its Lock value busy: the value's next Lock, once the key is
// free, acquires it (and its TryLock does not report it held).
func TestPanickingTracerDoesNotWedgeLockValue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := memory.New()
		defer b.Close()
		m := ctxlock.NewManager(b, ctxlock.WithTracerProvider(panickyTracerProvider{once: new(atomic.Bool)}))
		defer closeManager(t, m)
		ctx := context.Background()
		l1 := m.NewLock("k")
		if _, err := l1.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		l2 := m.NewLock("k")
		if p := recovered(func() { _, _ = l2.Lock(ctx) }); p == nil {
			t.Fatal("the tracer's panic did not reach the Lock caller")
		}
		if err := l1.Unlock(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		locksFreeKey(t, l2, "Lock of the free key, on the value whose earlier call panicked")
	})
}

// A meter that panics as a waiting Lock call counts the release of its
// failed attempt (of unknown outcome) must not leave the call in the key's
// local queue: the next Lock call on the key, once the backend is back,
// acquires it instead of waiting for ever behind a call that is gone.
func TestPanickingMeterDoesNotWedgeKeyQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := memory.New()
		defer b.Close()
		armed := new(atomic.Bool)
		m := ctxlock.NewManager(b, ctxlock.WithMeterProvider(panickyMeterProvider{armed: armed}))
		defer closeManager(t, m)
		ctx := context.Background()
		b.SetUnavailable(true)
		armed.Store(true)
		if p := recovered(func() { _, _ = m.NewLock("k").Lock(ctx) }); p == nil {
			t.Fatal("the meter's panic did not reach the Lock caller")
		}
		requireMutexFree(t, m)
		b.SetUnavailable(false)
		synctest.Wait()
		locksFreeKey(t, m.NewLock("k"), "Lock of the free key after the panic")
	})
}

// The same for a tracer that panics as the call's attempt finds the key held
// by another owner (the "ctxlock.contended" event).
func TestPanickingTracerOnHeldAttemptDoesNotWedgeKeyQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := memory.New()
		defer b.Close()
		ctx := context.Background()
		other := ctxlock.NewManager(b)
		defer closeManager(t, other)
		holder := other.NewLock("k")
		if _, err := holder.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		m := ctxlock.NewManager(b, ctxlock.WithTracerProvider(panickyTracerProvider{once: new(atomic.Bool)}))
		defer closeManager(t, m)
		if p := recovered(func() { _, _ = m.NewLock("k").Lock(ctx) }); p == nil {
			t.Fatal("the tracer's panic did not reach the Lock caller")
		}
		requireMutexFree(t, m)
		if err := holder.Unlock(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		locksFreeKey(t, m.NewLock("k"), "Lock of the free key after the panic")
	})
}

// The same for a Lock call that queues behind another Lock call on the same
// value (the value's own gate): the panic must not leave the call's place in
// the value's queue, where the value's turn would be handed to nobody.
func TestPanickingTracerDoesNotWedgeLockValueGate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := memory.New()
		defer b.Close()
		m := ctxlock.NewManager(b, ctxlock.WithTracerProvider(panickyTracerProvider{once: new(atomic.Bool)}))
		defer closeManager(t, m)
		ctx := context.Background()
		l := m.NewLock("k")
		if _, err := l.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		if p := recovered(func() { _, _ = l.Lock(ctx) }); p == nil {
			t.Fatal("the tracer's panic did not reach the Lock caller")
		}
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		locksFreeKey(t, l, "Lock of the free key after the panic")
	})
}

// pendingPanicMeterProvider is mp whose ctxlock.release.pending counter
// panics on its first increment once armed (see panickyCounter); every other
// instrument records into mp.
type pendingPanicMeterProvider struct {
	metric.MeterProvider
	armed *atomic.Bool
}

func (p pendingPanicMeterProvider) Meter(name string, opts ...metric.MeterOption) metric.Meter {
	return pendingPanicMeter{Meter: p.MeterProvider.Meter(name, opts...), armed: p.armed}
}

type pendingPanicMeter struct {
	metric.Meter
	armed *atomic.Bool
}

func (m pendingPanicMeter) Int64UpDownCounter(name string, opts ...metric.Int64UpDownCounterOption) (metric.Int64UpDownCounter, error) {
	c, err := m.Meter.Int64UpDownCounter(name, opts...)
	if name == ctxlockotel.MetricReleasePending {
		return pendingPanicCounter{Int64UpDownCounter: c, armed: m.armed}, err
	}
	return c, err
}

type pendingPanicCounter struct {
	metric.Int64UpDownCounter
	armed *atomic.Bool
}

func (c pendingPanicCounter) Add(ctx context.Context, incr int64, opts ...metric.AddOption) {
	if incr > 0 && c.armed.CompareAndSwap(true, false) {
		panic("meter: Add")
	}
	c.Int64UpDownCounter.Add(ctx, incr, opts...)
}

// A meter that panics as Unlock counts the release it queues must not cost
// the records that unlock makes after it: the hold's end still takes
// ctxlock.held back to 0 (else it reads 1 for ever, with nothing held).
func TestPanickingMeterKeepsOtherRecords(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := scheduledReleases{memory.New()} // Unlock queues its release
		defer b.Close()
		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		armed := new(atomic.Bool)
		m := ctxlock.NewManager(b, ctxlock.WithMeterProvider(pendingPanicMeterProvider{MeterProvider: mp, armed: armed}))
		defer closeManager(t, m)
		ctx := context.Background()
		l := m.NewLock("k")
		if _, err := l.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		armed.Store(true)
		if p := recovered(func() { _ = l.Unlock() }); p == nil {
			t.Fatal("the meter's panic did not reach the Unlock caller")
		}
		synctest.Wait()
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(ctx, &rm); err != nil {
			t.Fatal(err)
		}
		if held := otelSum(t, rm, ctxlockotel.MetricHeld); held != 0 {
			t.Errorf("ctxlock.held = %d after the only hold was unlocked, want 0", held)
		}
		if n, _ := otelHist(t, rm, ctxlockotel.MetricHoldDuration); n != 1 {
			t.Errorf("ctxlock.hold.duration count = %d, want 1", n)
		}
	})
}

// locksFreeKey checks that l takes its free key at once after an earlier
// call panicked (within a minute of fake time: not stuck behind a call that
// is gone), and unlocks it.
func locksFreeKey(t *testing.T, l ctxlock.Lock, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var err error
	if p := recovered(func() { _, err = l.Lock(ctx) }); p != nil || err != nil {
		t.Fatalf("%s: panic %v, err %v", what, p, err)
	}
	_ = l.Unlock()
}

// A tracer that panics as it ends the span of a Lock call that acquired the
// key takes the hold from the caller, who never sees its expiry channel and
// cannot unlock it: the hold must end (released) rather than be refreshed,
// and the key held, until the Manager closes; and the Lock value must not
// stay busy.
func TestPanickingTracerAtAcquireEndDoesNotKeepTheKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := memory.New()
		defer b.Close()
		m := ctxlock.NewManager(b, ctxlock.WithTracerProvider(panickyTracerProvider{once: new(atomic.Bool), onEnd: true}))
		defer closeManager(t, m)
		ctx := context.Background()
		l := m.NewLock("k", ctxlock.WithTTL(time.Minute))
		if p := recovered(func() { _, _ = l.Lock(ctx) }); p == nil {
			t.Fatal("the tracer's panic did not reach the Lock caller")
		}
		requireMutexFree(t, m)
		synctest.Wait() // the release, if any, settled

		other := ctxlock.NewManager(b)
		defer closeManager(t, other)
		ol := other.NewLock("k")
		ok, _, err := ol.TryLock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Fatal("the key is still held by the hold whose Lock call panicked: nobody can unlock it, and it is refreshed until Close")
		}
		if err := ol.Unlock(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		locksFreeKey(t, l, "Lock of the free key, on the value whose earlier call panicked")
	})
}
