package ctxlockotel

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// The tests in this file touch the otel globals; they restore them and must
// not run in parallel.

var errCycle = errors.New("ctxlock: lock lost")

// fullCycle drives every recording method the way a Manager does.
func fullCycle(inst *Instrumentation, ctx context.Context) {
	c, a := inst.StartAcquire(ctx, nil, false, "jobs/leader")
	_ = c
	a.Attempt(true)
	a.Attempt(false)
	sc := a.End(OutcomeAcquired, 7, nil)
	inst.HoldEnded(sc, "jobs/leader", time.Second, ReasonLost, errCycle)

	_, t := inst.StartAcquire(ctx, nil, true, "jobs/leader")
	t.Attempt(true)
	t.End(OutcomeHeld, 0, nil)

	_, b := inst.StartBatch(ctx, OpRefresh, 3)
	b.End(1, errCycle)
	inst.PendingReleases(1)
	inst.PendingReleases(-1)
}

func requireDefaultGlobals(t *testing.T) {
	t.Helper()
	if otel.GetTracerProvider() != defaultTP || otel.GetMeterProvider() != defaultMP || defaultTP == nil || defaultMP == nil {
		t.Fatal("otel globals are not the defaults: a test forgot to restore them")
	}
}

func TestZeroAllocsWhenUnconfigured(t *testing.T) {
	requireDefaultGlobals(t)
	inst := New("memory")
	ctx := context.Background()

	// The core acquire cycle the issue names, on its own.
	allocs := testing.AllocsPerRun(1000, func() {
		_, a := inst.StartAcquire(ctx, nil, false, "jobs/leader")
		a.Attempt(true)
		a.Attempt(false)
		sc := a.End(OutcomeAcquired, 7, nil)
		inst.HoldEnded(sc, "jobs/leader", time.Second, ReasonUnlocked, nil)
	})
	if allocs != 0 {
		t.Errorf("StartAcquire→Attempt→End→HoldEnded allocates %v times per run when unconfigured, want 0", allocs)
	}
	// Every method, including the batch and error paths.
	if allocs := testing.AllocsPerRun(1000, func() { fullCycle(inst, ctx) }); allocs != 0 {
		t.Errorf("full cycle allocates %v times per run when unconfigured, want 0", allocs)
	}
}

func TestZeroAllocsWithNoopProviders(t *testing.T) {
	ctx := context.Background()
	for name, inst := range map[string]*Instrumentation{
		"value":   New("memory", WithTracerProvider(tracenoop.NewTracerProvider()), WithMeterProvider(metricnoop.NewMeterProvider())),
		"pointer": New("memory", WithTracerProvider(&tracenoop.TracerProvider{}), WithMeterProvider(&metricnoop.MeterProvider{})),
	} {
		if allocs := testing.AllocsPerRun(1000, func() { fullCycle(inst, ctx) }); allocs != 0 {
			t.Errorf("%s noop providers: %v allocs per run, want 0", name, allocs)
		}
	}
}

func TestGlobalProvidersAreUsedOnceSet(t *testing.T) {
	requireDefaultGlobals(t)
	ctx := context.Background()
	inst := New("memory") // built before the application sets the globals

	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	sr2 := tracetest.NewSpanRecorder()
	tp2 := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr2))
	oldTP, oldMP := otel.GetTracerProvider(), otel.GetMeterProvider()
	defer func() {
		if otel.GetTracerProvider() != oldTP {
			otel.SetTracerProvider(oldTP)
		}
		if otel.GetMeterProvider() != oldMP {
			otel.SetMeterProvider(oldMP)
		}
		for _, shutdown := range []func(context.Context) error{tp.Shutdown, tp2.Shutdown, mp.Shutdown} {
			if err := shutdown(ctx); err != nil {
				t.Error(err)
			}
		}
	}()

	fullCycle(inst, ctx)
	if n := len(sr.Ended()); n != 0 {
		t.Fatalf("%d spans before the globals were set", n)
	}

	otel.SetTracerProvider(tp)
	otel.SetMeterProvider(mp)
	fullCycle(inst, ctx)
	if got := spanNames(sr.Ended()); len(got) != 4 { // Lock, hold, TryLock, refresh
		t.Errorf("spans through the global provider: %v, want 4", got)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	if len(rm.ScopeMetrics) != 1 || rm.ScopeMetrics[0].Scope.Name != ScopeName || len(rm.ScopeMetrics[0].Metrics) != len(MetricNames()) {
		t.Errorf("metrics through the global provider: %+v", rm.ScopeMetrics)
	}

	// A later SetTracerProvider is followed.
	otel.SetTracerProvider(tp2)
	_, a := inst.StartAcquire(ctx, nil, true, "k")
	a.End(OutcomeHeld, 0, nil)
	if n, n2 := len(sr.Ended()), len(sr2.Ended()); n != 4 || n2 != 1 {
		t.Errorf("after switching providers: %d old spans, %d new, want 4, 1", n, n2)
	}

	// Restoring the default globals turns instrumentation off again.
	otel.SetTracerProvider(oldTP)
	otel.SetMeterProvider(oldMP)
	fullCycle(inst, ctx)
	if n2 := len(sr2.Ended()); n2 != 1 {
		t.Errorf("spans recorded after the globals were restored: %d", n2-1)
	}
}

func BenchmarkAcquireUnconfigured(b *testing.B) {
	inst := New("memory")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, a := inst.StartAcquire(ctx, nil, false, "k")
		a.Attempt(false)
		sc := a.End(OutcomeAcquired, 1, nil)
		inst.HoldEnded(sc, "k", time.Second, ReasonUnlocked, nil)
	}
}

func BenchmarkAcquireRecording(b *testing.B) {
	tp := sdktrace.NewTracerProvider()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer tp.Shutdown(context.Background())
	defer mp.Shutdown(context.Background())
	inst := New("memory", WithTracerProvider(tp), WithMeterProvider(mp))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, a := inst.StartAcquire(ctx, nil, false, "k")
		a.Attempt(false)
		sc := a.End(OutcomeAcquired, 1, nil)
		inst.HoldEnded(sc, "k", time.Second, ReasonUnlocked, nil)
	}
}
