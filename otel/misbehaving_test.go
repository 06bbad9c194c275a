package ctxlockotel_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	membedded "go.opentelemetry.io/otel/metric/embedded"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tembedded "go.opentelemetry.io/otel/trace/embedded"

	ctxlockotel "github.com/ctxlock/ctxlock/otel"
)

// nilMeterProvider and nilTracerProvider hand out nil meters and tracers.
type nilMeterProvider struct{ membedded.MeterProvider }

func (nilMeterProvider) Meter(string, ...metric.MeterOption) metric.Meter { return nil }

type nilTracerProvider struct{ tembedded.TracerProvider }

func (nilTracerProvider) Tracer(string, ...trace.TracerOption) trace.Tracer { return nil }

// exercise calls every recording method, End twice.
func exercise(i *ctxlockotel.Instrumentation) {
	ctx, a := i.StartAcquire(context.Background(), nil, false, "k")
	a.Attempt(true)
	a.Queued()
	sc := a.End(ctxlockotel.OutcomeAcquired, 3, nil)
	a.End(ctxlockotel.OutcomeAcquired, 3, nil)
	i.HoldEnded(sc, "k", time.Second, ctxlockotel.ReasonLost, errors.New("lost"))
	_, b := i.StartBatch(ctx, ctxlockotel.OpRefresh, 3)
	b.End(1, errors.New("failed"))
	b.End(1, errors.New("failed"))
	i.PendingReleases(1)
	_ = i.Enabled()
}

// Misused or misbehaving providers never make New or the recording methods
// panic: a provider handing out a nil meter (or tracer) turns that signal
// off; options given twice (the last non-nil one wins) or nil; providers
// used after their Shutdown; an empty backend name; the zero values.
func TestMisbehavingProvidersDoNotPanic(t *testing.T) {
	t.Run("nil meter", func(t *testing.T) {
		i := ctxlockotel.New("x", ctxlockotel.WithMeterProvider(nilMeterProvider{}))
		exercise(i)
		if i.Enabled() {
			t.Error("Enabled with a provider that gives no meter")
		}
	})
	t.Run("nil tracer", func(t *testing.T) {
		i := ctxlockotel.New("x", ctxlockotel.WithTracerProvider(nilTracerProvider{}))
		exercise(i)
		if i.Enabled() {
			t.Error("Enabled with a provider that gives no tracer")
		}
	})
	t.Run("twice and after shutdown", func(t *testing.T) {
		tp := sdktrace.NewTracerProvider()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		i := ctxlockotel.New("", ctxlockotel.WithTracerProvider(tp), ctxlockotel.WithMeterProvider(mp),
			ctxlockotel.WithTracerProvider(tp), ctxlockotel.WithMeterProvider(nil), nil)
		exercise(i)
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
		exercise(i)
	})
	t.Run("zero values", func(t *testing.T) {
		var a ctxlockotel.Acquire
		a.Attempt(false)
		a.End(ctxlockotel.OutcomeError, 0, errors.New("x"))
		var b ctxlockotel.Batch
		b.End(0, nil)
		exercise(nil)
	})
}
