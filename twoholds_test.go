package ctxlock_test

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
	ctxlockotel "github.com/ctxlock/ctxlock/otel"
)

// A TryLock's attempt whose answer comes after another Lock value of the
// same Manager made a hold of the key (the TryLock's lease ended on the
// server meanwhile, and the Lock took the key) does not make a second
// hold: the TryLock reports the key held, gives its lease back, and the
// local hold is refreshed (and kept: its lease is the live one). Its
// span and ctxlock.contention record it as contended, found held.
func TestNoSecondHoldOfAKeyHeldHere(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &deleteNotifying{Backend: memory.New()}
		rig := &otelRig{t: t, sr: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
		rig.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rig.sr))
		rig.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(rig.reader))
		m := ctxlock.NewManager(b, ctxlock.WithTracerProvider(rig.tp), ctxlock.WithMeterProvider(rig.mp))
		defer m.Close(context.Background())
		gate := make(chan struct{})
		var first atomic.Bool
		b.acquired = func(lease ctxlock.Lease) {
			if first.CompareAndSwap(false, true) {
				b.Evict(lease.Key) // the server ends the TryLock's lease early
				<-gate
			}
		}
		type result struct {
			ok  bool
			err error
		}
		tried := make(chan result, 1)
		try := m.NewLock("k", ctxlock.WithTTL(time.Hour))
		go func() {
			ok, _, err := try.TryLock(context.Background())
			tried <- result{ok, err}
		}()
		synctest.Wait() // the TryLock's answer is on its way

		holder := m.NewLock("k", ctxlock.WithTTL(time.Hour))
		expired, err := holder.Lock(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		close(gate)
		r := <-tried
		if r.ok || r.err != nil {
			t.Fatalf("TryLock of a key held here = %v, %v; want false, nil", r.ok, r.err)
		}
		synctest.Wait()
		if n := b.extends.Load(); n != 1 {
			t.Errorf("%d Extend calls, want 1: the local hold refreshed", n)
		}
		spans := rig.spans(ctxlockotel.SpanTryLock)
		if len(spans) != 1 {
			t.Fatalf("%d TryLock spans, want 1", len(spans))
		}
		if want := []attribute.KeyValue{
			ctxlockotel.AttrOutcome.String(ctxlockotel.OutcomeHeld),
			ctxlockotel.AttrContended.Bool(true),
			ctxlockotel.AttrAttempts.Int(1),
		}; !otelHasAll(attribute.NewSet(spans[0].Attributes()...), want) {
			t.Errorf("TryLock span attributes %v, want %v among them", spans[0].Attributes(), want)
		}
		if n := otelSum(t, rig.collect(), ctxlockotel.MetricContention,
			ctxlockotel.AttrOperation.String(ctxlockotel.OpTryLock)); n != 1 {
			t.Errorf("ctxlock.contention of TryLock = %d, want 1", n)
		}
		select {
		case <-expired:
			t.Fatalf("the live hold ended: %v", holder.Err())
		default:
		}
		if err := holder.Unlock(); err != nil {
			t.Fatal(err)
		}
		if ok, _, err := try.TryLock(t.Context()); !ok || err != nil {
			t.Fatalf("TryLock after the Unlock = %v, %v; want true", ok, err)
		}
		if err := try.Unlock(); err != nil {
			t.Fatal(err)
		}
	})
}
