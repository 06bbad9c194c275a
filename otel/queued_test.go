package ctxlockotel

import (
	"context"
	"testing"
)

// TestQueuedMarksContendedWithoutAnAttempt checks that a Lock call waiting
// behind a local holder counts as contended: event, contention counter and
// wait time, but no backend attempt.
func TestOtelQueuedMarksContendedWithoutAnAttempt(t *testing.T) {
	h := newHarness(t)
	_, a := h.inst.StartAcquire(context.Background(), nil, false, "k")
	a.Queued()
	a.Queued()      // idempotent
	a.Attempt(true) // a later held attempt does not count contention again
	a.Attempt(false)
	a.End(OutcomeAcquired, 7, nil)

	s := h.span(t, SpanLock)
	am := attrMap(s.Attributes())
	if am[AttrContended].AsBool() != true {
		t.Errorf("contended = %v, want true", am[AttrContended])
	}
	if got := am[AttrAttempts].AsInt64(); got != 2 {
		t.Errorf("attempts = %d, want 2 (Queued is not an attempt)", got)
	}
	if _, ok := am[AttrWaitTime]; !ok {
		t.Error("no wait_time on a queued call")
	}
	var events int
	for _, e := range s.Events() {
		if e.Name == EventContended {
			events++
		}
	}
	if events != 1 {
		t.Errorf("%d %s events, want 1", events, EventContended)
	}
	rm := h.collect(t)
	backend := AttrBackend.String("memory")
	key := AttrKey.String("k")
	if got, _ := sumPoint(t, metricNamed(t, rm, MetricContention), attrs(backend, key, AttrOperation.String(OpLock))); got != 1 {
		t.Errorf("%s = %d, want 1", MetricContention, got)
	}
	dp, _ := histPoint(t, metricNamed(t, rm, MetricWaitDuration), attrs(backend, key, AttrOperation.String(OpLock), AttrOutcome.String(OutcomeAcquired)))
	if dp.Count != 1 {
		t.Errorf("%s count = %d, want 1", MetricWaitDuration, dp.Count)
	}
}

func TestOtelQueuedOnZeroAcquireDoesNothing(t *testing.T) {
	var a Acquire
	a.Queued()
	var p *Acquire
	p.Queued()
	if n := testing.AllocsPerRun(100, func() { a.Queued() }); n != 0 {
		t.Errorf("Queued on the zero Acquire allocates %v", n)
	}
}
