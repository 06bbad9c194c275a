package ctxlock_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
	ctxlockotel "github.com/ctxlock/ctxlock/otel"
)

// twoManagers returns a memory store and two Managers of it, all closed
// when the test ends, as two processes sharing the store.
func twoManagers(t *testing.T) (*memory.Backend, *ctxlock.Manager, *ctxlock.Manager) {
	b := memory.New()
	t.Cleanup(func() { b.Close() })
	m1, m2 := ctxlock.NewManager(b), ctxlock.NewManager(b)
	t.Cleanup(func() { closeManager(t, m1) })
	t.Cleanup(func() { closeManager(t, m2) })
	return b, m1, m2
}

// On the memory backend (an InstantReleaser) the key is free for every
// Manager of the store once Unlock returns: another Manager's TryLock right
// after it succeeds, with no wait for the scheduler. In real time, many
// rounds, so that a release left to the scheduler would lose the race.
func TestUnlockReleasesInLineOnMemory(t *testing.T) {
	_, m1, m2 := twoManagers(t)
	ctx := t.Context()
	l1, l2 := m1.NewLock("k"), m2.NewLock("k")
	for i := range 200 {
		if _, err := l1.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		if err := l1.Unlock(); err != nil {
			t.Fatal(err)
		}
		ok, _, err := l2.TryLock(ctx)
		if !ok || err != nil {
			t.Fatalf("round %d: TryLock on another Manager right after Unlock = %v, %v; want true", i, ok, err)
		}
		if err := l2.Unlock(); err != nil {
			t.Fatal(err)
		}
	}
	if p := ctxlock.PendingReleases(m1); p != 0 {
		t.Errorf("%d releases pending after in-line releases", p)
	}
}

// While the store is slow, Unlock does not wait for it: the release goes to
// the scheduler, and the key is free for others once it is through.
func TestUnlockOnSlowMemoryLeavesReleaseToScheduler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, m1, m2 := twoManagers(t)
		l1 := m1.NewLock("k", ctxlock.WithAcquireTimeout(time.Minute))
		if _, err := l1.Lock(t.Context()); err != nil {
			t.Fatal(err)
		}
		b.SetLatency(time.Second)
		start := time.Now()
		if err := l1.Unlock(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 0 {
			t.Fatalf("Unlock took %v of fake time on a slow store", d)
		}
		if p := ctxlock.PendingReleases(m1); p != 1 {
			t.Fatalf("%d releases pending, want 1 (the scheduler's)", p)
		}
		b.SetLatency(0)
		synctest.Wait() // the scheduler's release, delayed by 1s, is through
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if ok, _, err := m2.NewLock("k").TryLock(t.Context()); !ok || err != nil {
			t.Fatalf("TryLock after the scheduler's release = %v, %v; want true", ok, err)
		}
	})
}

// A release in line still reports contention: a Lock value whose key
// another Manager wanted during the hold yields once when it locks again at
// once, so the waiter gets the key first.
func TestUnlockInLineKeepsFairness(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, m1, m2 := twoManagers(t)
		ctx := t.Context()
		l1 := m1.NewLock("k")
		if _, err := l1.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		got := make(chan uint64, 1)
		go func() {
			l2 := m2.NewLock("k")
			if _, err := l2.Lock(ctx); err != nil {
				t.Error(err)
				close(got)
				return
			}
			got <- l2.Token()
			_ = l2.Unlock()
		}()
		synctest.Wait() // the waiter found the key held
		first := l1.Token()
		if err := l1.Unlock(); err != nil {
			t.Fatal(err)
		}
		if _, err := l1.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		relocked := l1.Token()
		_ = l1.Unlock()
		waiter, ok := <-got
		if ok && waiter != first+1 {
			t.Errorf("the waiter got token %d, the re-lock %d (first hold %d): the re-lock did not yield", waiter, relocked, first)
		}
	})
}

// An Unlock's release in line is recorded, once the mutex is released, as
// a release batch of one lease (span and ctxlock.batch.duration); it never
// counts as pending.
func TestUnlockInLineRecordsReleaseBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rig := &otelRig{t: t, sr: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader(), be: memory.New()}
		rig.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rig.sr))
		rig.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(rig.reader))
		rig.ms = []*ctxlock.Manager{ctxlock.NewManager(rig.be, ctxlock.WithTracerProvider(rig.tp), ctxlock.WithMeterProvider(rig.mp))}
		defer rig.close()
		l := rig.ms[0].NewLock("k")
		for range 3 {
			if _, err := l.Lock(t.Context()); err != nil {
				t.Fatal(err)
			}
			if err := l.Unlock(); err != nil {
				t.Fatal(err)
			}
		}
		spans := rig.spans(ctxlockotel.SpanRelease)
		if len(spans) != 3 {
			t.Fatalf("%d release spans, want 3", len(spans))
		}
		for _, s := range spans {
			if want := []attribute.KeyValue{
				ctxlockotel.AttrOperation.String(ctxlockotel.OpRelease),
				ctxlockotel.AttrBatchSize.Int(1),
			}; !otelHasAll(attribute.NewSet(s.Attributes()...), want) {
				t.Errorf("release span attributes %v, want %v among them", s.Attributes(), want)
			}
			if s.Status().Code == codes.Error {
				t.Errorf("release span status %v", s.Status())
			}
		}
		rm := rig.collect()
		m, ok := otelMetric(t, rm, ctxlockotel.MetricBatchDuration)
		if !ok {
			t.Fatal("no ctxlock.batch.duration recorded")
		}
		var n uint64
		for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
			if otelHasAll(dp.Attributes, []attribute.KeyValue{ctxlockotel.AttrOperation.String(ctxlockotel.OpRelease)}) {
				n += dp.Count
			}
		}
		if n != 3 {
			t.Errorf("ctxlock.batch.duration has %d release records, want 3", n)
		}
		if _, ok := otelMetric(t, rm, ctxlockotel.MetricReleasePending); ok {
			t.Error("ctxlock.release.pending recorded for releases made in line")
		}
	})
}

// A wrapper that embeds the memory backend, to count, delay or fail its
// releases, is not gone around: the Manager releases in line only through
// the memory backend itself (InstantReleaser.InstantBackend), so Unlock's
// release reaches the wrapper's Release.
func TestUnlockReleasesThroughWrapper(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &batchAnswer{Backend: memory.New()}
		m := ctxlock.NewManager(b)
		defer closeManager(t, m)
		l := m.NewLock("k")
		if _, err := l.Lock(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if n := b.releases.Load(); n != 1 {
			t.Errorf("the wrapper's Release got %d calls, want 1 (Unlock's release)", n)
		}
	})
}

// valueInstant is a wrapper, passed by value, that wants in-line releases
// and so returns itself from InstantBackend, as InstantReleaser's doc
// advises; it has a func field (a hook), so it is not comparable.
type valueInstant struct {
	*memory.Backend
	onRelease func()
}

func (v valueInstant) TryRelease(l ctxlock.Lease) (bool, bool) {
	v.onRelease()
	return v.Backend.TryRelease(l)
}
func (v valueInstant) InstantBackend() ctxlock.Backend { return v }

// NewManager must not panic for a Backend value whose type is not
// comparable: Backend is an interface, and nothing requires comparability.
// (Such a wrapper's in-line releases are given up: the Manager cannot tell
// it is the Backend its InstantBackend returns.)
func TestInstantBackendOfUncomparableWrapper(t *testing.T) {
	p := recovered(func() {
		m := ctxlock.NewManager(valueInstant{Backend: memory.New(), onRelease: func() {}})
		_ = m.Close(context.Background())
	})
	if p != nil {
		t.Fatalf("NewManager panicked: %v", p)
	}
}

// A Lock+Unlock loop on the memory backend, whose in-line releases leave
// the key idle at every Unlock, reuses the key's state on both sides (the
// Manager's, the store's entry): it allocates only the hold, its expiry
// channel and the attempt's owner id.
func TestLockUnlockOnMemoryReusesKeyState(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counting")
	}
	ctx := context.Background()
	allocs := allocsPerCycle(t, true, func(t *testing.T, l ctxlock.Lock) {
		if _, err := l.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 3 {
		t.Errorf("%.1f allocations per Lock+Unlock, want at most 3 (hold, expiry channel, owner id)", allocs)
	}
}
