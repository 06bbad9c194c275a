package ctxlock_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/ctxlock/ctxlock"
)

// gateTracer's spans wait for gate in AddEvent (onEvent) or End (onEnd),
// the first time only, after telling entered.
type gateTracer struct {
	tracenoop.Tracer
	onEvent, onEnd bool
	entered, gate  chan struct{}
	once           *sync.Once
}

func (tr gateTracer) Start(ctx context.Context, name string, _ ...trace.SpanStartOption) (context.Context, trace.Span) {
	return ctx, gateSpan{tr: tr}
}

type gateSpan struct {
	tracenoop.Span
	tr gateTracer
}

func (s gateSpan) wait() {
	s.tr.once.Do(func() {
		close(s.tr.entered)
		<-s.tr.gate
	})
}

func (s gateSpan) AddEvent(string, ...trace.EventOption) {
	if s.tr.onEvent {
		s.wait()
	}
}

func (s gateSpan) End(...trace.SpanEndOption) {
	if s.tr.onEnd {
		s.wait()
	}
}

// A record made by one call (here ctxlock.release.pending −1, as a Lock
// call's Relock settles the release it took along) is made by that call,
// never left for another goroutine's: a meter that panics on it panics in
// the call that made it, which cleans up after itself, and not in another
// call about to return a hold, which would have left that hold with
// nobody to unlock it.
func TestRecordPanicStaysWithItsCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newRoundTripBackend(true) // A's release waits: A's next Lock relocks it
		armed := new(atomic.Bool)
		m := ctxlock.NewManager(b, ctxlock.WithMeterProvider(panickyMeterProvider{armed: armed, decrement: true}))
		defer m.Close(context.Background())

		trA := gateTracer{onEvent: true, entered: make(chan struct{}), gate: make(chan struct{}), once: new(sync.Once)}
		trB := gateTracer{onEnd: true, entered: make(chan struct{}), gate: make(chan struct{}), once: new(sync.Once)}
		a := m.NewLock("k", ctxlock.WithTTL(time.Hour), ctxlock.WithTracer(trA))
		bl := m.NewLock("j", ctxlock.WithTTL(time.Hour), ctxlock.WithTracer(trB))

		if _, err := a.Lock(t.Context()); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if err := a.Unlock(); err != nil { // release pending (+1), waits for the round trip
			t.Fatal(err)
		}
		synctest.Wait()
		// A's lease ends on the server and another owner takes "k": A's
		// Relock releases nothing and is refused.
		b.Evict("k")
		elsewhere := leaseElsewhere(t, b.Backend, "k")

		// B acquires "j" and waits in its acquire span's End.
		bPanic := make(chan any, 1)
		go func() { bPanic <- recovered(func() { _, _ = bl.Lock(t.Context()) }) }()
		<-trB.entered
		armed.Store(true)

		// A relocks; recording the settled release (−1 pending) panics.
		aPanic := make(chan any, 1)
		go func() { aPanic <- recovered(func() { _, _ = a.Lock(t.Context()) }) }()
		select {
		case p := <-aPanic:
			if p == nil {
				t.Fatal("A's Lock returned without the meter's panic")
			}
		case <-trA.entered:
			close(trA.gate)
			close(trB.gate)
			<-aPanic
			t.Fatal("A's Lock went on to its contended event with its record left unmade")
		}
		close(trB.gate)
		if p := <-bPanic; p != nil {
			t.Fatalf("B's Lock panicked with A's record: %v", p)
		}
		if owner, _, _, _, ok := b.Holder("j"); !ok || bl.Token() == 0 {
			t.Fatalf("B holds \"j\": server %v (owner %q), Token %d; want held", ok, owner, bl.Token())
		}
		if err := bl.Unlock(); err != nil {
			t.Fatal(err)
		}
		// A's call cleaned up: its Lock value locks the key once it is free.
		b.Release(context.Background(), []ctxlock.Lease{elsewhere})
		if _, err := a.Lock(t.Context()); err != nil {
			t.Fatalf("A's Lock after the panic: %v", err)
		}
		_ = a.Unlock()
		close(trA.gate)
	})
}
