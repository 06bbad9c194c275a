package ctxlockotel_test

import (
	"context"
	"errors"
	"fmt"
	"slices"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
	ctxlockotel "github.com/ctxlock/ctxlock/otel"
)

// ErrorType gives the error.type attribute of spans: a short,
// low-cardinality name, the same for every error of a kind however it was
// wrapped.
func ExampleErrorType() {
	refresh := fmt.Errorf("refresh %q: %w", "orders/42", ctxlock.ErrLost)
	outage := ctxlock.Unavailable(errors.New("dial tcp 10.0.0.7:6379: connection refused"))
	fmt.Println(ctxlockotel.ErrorType(refresh))
	fmt.Println(ctxlockotel.ErrorType(outage))
	fmt.Println(ctxlockotel.ErrorType(fmt.Errorf("lock: %w", context.DeadlineExceeded)))
	fmt.Println(ctxlockotel.ErrorType(errors.New("something else")))
	// Output:
	// ctxlock.lock_lost
	// ctxlock.backend_unavailable
	// context.DeadlineExceeded
	// _OTHER
}

// MetricNames lists the instruments, for instance to check that a
// dashboard's queries name existing metrics.
func ExampleMetricNames() {
	for _, name := range ctxlockotel.MetricNames() {
		fmt.Println(name)
	}
	// Output:
	// ctxlock.acquire.duration
	// ctxlock.wait.duration
	// ctxlock.contention
	// ctxlock.held
	// ctxlock.hold.duration
	// ctxlock.hold.lost
	// ctxlock.refresh.batch.size
	// ctxlock.batch.duration
	// ctxlock.release.pending
}

// Wiring ctxlock into OpenTelemetry: give the Manager a TracerProvider and a
// MeterProvider (without them it uses the otel globals). Here both are SDK
// providers that keep what they record in memory; a service would export
// them instead.
func Example_setup() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))

	ctx := context.Background()
	m := ctxlock.NewManager(memory.New(), ctxlock.WithTracerProvider(tp), ctxlock.WithMeterProvider(mp))
	l := m.NewLock("orders/42")
	if _, err := l.Lock(ctx); err != nil {
		fmt.Println(err)
		return
	}
	l.Unlock() // on the memory backend, released in line: a batch of one
	m.Close(ctx)

	for _, s := range spans.Ended() {
		fmt.Println("span", s.Name(), s.InstrumentationScope().Name)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		fmt.Println(err)
		return
	}
	var names []string
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			names = append(names, mt.Name)
		}
	}
	slices.Sort(names)
	fmt.Println("metrics", names)
	// Output:
	// span ctxlock.acquire github.com/ctxlock/ctxlock/otel
	// span ctxlock.release github.com/ctxlock/ctxlock/otel
	// metrics [ctxlock.acquire.duration ctxlock.batch.duration ctxlock.held ctxlock.hold.duration ctxlock.wait.duration]
}
