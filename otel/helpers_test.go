package ctxlockotel

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// harness is an Instrumentation wired to an in-memory span recorder and a
// manual metric reader.
type harness struct {
	inst   *Instrumentation
	sr     *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{sr: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	h.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(h.sr))
	h.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(h.reader))
	t.Cleanup(func() {
		ctx := context.Background()
		if err := h.tp.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := h.mp.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	h.inst = New("memory", WithTracerProvider(h.tp), WithMeterProvider(h.mp))
	return h
}

// spans returns the ended spans named name.
func (h *harness) spans(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range h.sr.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

func (h *harness) span(t *testing.T, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	ss := h.spans(name)
	if len(ss) != 1 {
		t.Fatalf("got %d ended spans named %q, want 1 (all: %v)", len(ss), name, spanNames(h.sr.Ended()))
	}
	return ss[0]
}

func spanNames(ss []sdktrace.ReadOnlySpan) []string {
	var names []string
	for _, s := range ss {
		names = append(names, s.Name())
	}
	return names
}

func (h *harness) collect(t *testing.T) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := h.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	return rm
}

// metric returns the metric named name, failing when absent.
func metricNamed(t *testing.T, rm metricdata.ResourceMetrics, name string) metricdata.Metrics {
	t.Helper()
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				if sm.Scope.Name != ScopeName || sm.Scope.Version != Version {
					t.Errorf("metric %s has scope %s@%s, want %s@%s", name, sm.Scope.Name, sm.Scope.Version, ScopeName, Version)
				}
				return m
			}
		}
	}
	t.Fatalf("no metric %q collected", name)
	return metricdata.Metrics{}
}

// findMetric returns the metric named name, if collected.
func findMetric(rm metricdata.ResourceMetrics, name string) (metricdata.Metrics, bool) {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

// attrs builds an attribute set from key/value pairs for comparisons.
func attrs(kvs ...attribute.KeyValue) attribute.Set { return attribute.NewSet(kvs...) }

// sumPoint returns the value of the int64 sum data point with exactly set.
func sumPoint(t *testing.T, m metricdata.Metrics, set attribute.Set) (int64, bool) {
	t.Helper()
	sum, ok := m.Data.(metricdata.Sum[int64])
	if !ok {
		t.Fatalf("%s: data is %T, want Sum[int64]", m.Name, m.Data)
	}
	for _, dp := range sum.DataPoints {
		if dp.Attributes.Equals(&set) {
			return dp.Value, true
		}
	}
	return 0, false
}

// histPoint returns the float64 histogram data point with exactly set.
func histPoint(t *testing.T, m metricdata.Metrics, set attribute.Set) (metricdata.HistogramDataPoint[float64], bool) {
	t.Helper()
	h, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s: data is %T, want Histogram[float64]", m.Name, m.Data)
	}
	for _, dp := range h.DataPoints {
		if dp.Attributes.Equals(&set) {
			return dp, true
		}
	}
	return metricdata.HistogramDataPoint[float64]{}, false
}

func attrMap(kvs []attribute.KeyValue) map[attribute.Key]attribute.Value {
	m := make(map[attribute.Key]attribute.Value, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

func hasEvent(s sdktrace.ReadOnlySpan, name string) bool {
	for _, e := range s.Events() {
		if e.Name == name {
			return true
		}
	}
	return false
}

var (
	backendMemory = AttrBackend.String("memory")
)
