package ctxlockotel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"
)

// Stand-ins for the sentinels of package ctxlock (which this package must not
// import): same text, same kind of value.
var (
	errInvalidKey  = errors.New("ctxlock: invalid key")
	errUnavailable = errors.New("ctxlock: backend unavailable")
	errLost        = errors.New("ctxlock: lock lost")
	errExpired     = errors.New("ctxlock: lock expired")
	errClosed      = errors.New("ctxlock: manager closed")
)

func TestLockSpanIsChildOfCallerSpanWithAttributes(t *testing.T) {
	h := newHarness(t)
	ctx, parent := h.tp.Tracer("test").Start(context.Background(), "request")

	actx, a := h.inst.StartAcquire(ctx, nil, false, "jobs/leader")
	if got := trace.SpanFromContext(actx).SpanContext(); got.SpanID() == parent.SpanContext().SpanID() {
		t.Fatal("StartAcquire returned the caller's context, want one carrying the acquire span")
	}
	// A backend call made with the returned context nests under the acquire span.
	_, backendSpan := h.tp.Tracer("backend").Start(actx, "redis.EVALSHA")
	backendSpan.End()

	a.Attempt(true)
	time.Sleep(2 * time.Millisecond)
	a.Attempt(true)
	a.Attempt(false)
	sc := a.End(OutcomeAcquired, 42, nil)
	parent.End()

	s := h.span(t, SpanLock)
	if s.Parent().SpanID() != parent.SpanContext().SpanID() || s.SpanContext().TraceID() != parent.SpanContext().TraceID() {
		t.Errorf("acquire span parent = %v, want the caller's span %v", s.Parent().SpanID(), parent.SpanContext().SpanID())
	}
	if !sc.Equal(s.SpanContext()) {
		t.Errorf("End returned %v, want the acquire span's context %v", sc, s.SpanContext())
	}
	if b := h.span(t, "redis.EVALSHA"); b.Parent().SpanID() != s.SpanContext().SpanID() {
		t.Errorf("backend span parent = %v, want the acquire span", b.Parent().SpanID())
	}
	if s.SpanKind() != trace.SpanKindInternal {
		t.Errorf("kind = %v, want internal", s.SpanKind())
	}
	if sc := s.InstrumentationScope(); sc.Name != ScopeName || sc.Version != Version {
		t.Errorf("scope = %s@%s, want %s@%s", sc.Name, sc.Version, ScopeName, Version)
	}
	m := attrMap(s.Attributes())
	want := map[attribute.Key]attribute.Value{
		AttrKey:          attribute.StringValue("jobs/leader"),
		AttrBackend:      attribute.StringValue("memory"),
		AttrAttempts:     attribute.IntValue(3),
		AttrContended:    attribute.BoolValue(true),
		AttrFencingToken: attribute.Int64Value(42),
		AttrOutcome:      attribute.StringValue(OutcomeAcquired),
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("attribute %s = %v, want %v", k, m[k].String(), v.String())
		}
	}
	if w := m[AttrWaitTime].AsFloat64(); w < 0.002 {
		t.Errorf("wait_time = %v s, want ≥ 2ms", w)
	}
	if _, ok := m[AttrErrorType]; ok {
		t.Error("successful acquire has error.type")
	}
	if s.Status().Code != codes.Unset {
		t.Errorf("status = %v, want Unset", s.Status())
	}
	if !hasEvent(s, EventContended) {
		t.Errorf("no %s event", EventContended)
	}
}

func TestUncontendedLockWaitsZero(t *testing.T) {
	h := newHarness(t)
	_, a := h.inst.StartAcquire(context.Background(), nil, false, "k")
	a.Attempt(false)
	a.End(OutcomeAcquired, 1, nil)

	s := h.span(t, SpanLock)
	m := attrMap(s.Attributes())
	if m[AttrContended] != attribute.BoolValue(false) || m[AttrAttempts] != attribute.IntValue(1) {
		t.Errorf("contended=%v attempts=%v, want false, 1", m[AttrContended].String(), m[AttrAttempts].String())
	}
	if v, ok := m[AttrWaitTime]; !ok || v.AsFloat64() != 0 {
		t.Errorf("uncontended acquire: wait time %v (present %v), want 0", v.AsFloat64(), ok)
	}
	if hasEvent(s, EventContended) {
		t.Error("uncontended acquire has a contended event")
	}
	if s.Parent().IsValid() {
		t.Error("acquire without a caller span should be a root span")
	}

	rm := h.collect(t)
	set := attrs(backendMemory, AttrKey.String("k"), AttrOperation.String(OpLock), AttrOutcome.String(OutcomeAcquired))
	if dp, ok := histPoint(t, metricNamed(t, rm, MetricWaitDuration), set); !ok || dp.Count != 1 || dp.Sum != 0 {
		t.Errorf("uncontended Lock: wait.duration count %d sum %v (found %v), want one 0", dp.Count, dp.Sum, ok)
	}
}

func TestTryLockHeldIsAnOutcomeNotAnError(t *testing.T) {
	h := newHarness(t)
	_, a := h.inst.StartAcquire(context.Background(), nil, true, "leader")
	a.Attempt(true)
	a.End(OutcomeHeld, 0, nil)

	s := h.span(t, SpanTryLock)
	if s.Status().Code != codes.Unset {
		t.Errorf("status = %v, want Unset: a held TryLock is not an error", s.Status())
	}
	m := attrMap(s.Attributes())
	if m[AttrOutcome] != attribute.StringValue(OutcomeHeld) || m[AttrContended] != attribute.BoolValue(true) {
		t.Errorf("outcome=%v contended=%v, want held, true", m[AttrOutcome].String(), m[AttrContended].String())
	}
	if _, ok := m[AttrErrorType]; ok {
		t.Error("held TryLock has error.type")
	}
	if _, ok := m[AttrFencingToken]; ok {
		t.Error("held TryLock has a fencing token")
	}

	rm := h.collect(t)
	key := AttrKey.String("leader")
	if v, _ := sumPoint(t, metricNamed(t, rm, MetricContention), attrs(backendMemory, key, AttrOperation.String(OpTryLock))); v != 1 {
		t.Errorf("contention{try_lock} = %d, want 1", v)
	}
	dp, ok := histPoint(t, metricNamed(t, rm, MetricAcquireDuration), attrs(backendMemory, key, AttrOperation.String(OpTryLock), AttrOutcome.String(OutcomeHeld)))
	if !ok || dp.Count != 1 {
		t.Errorf("acquire.duration{try_lock,held} count = %d (found %v), want 1", dp.Count, ok)
	}
	dp, ok = histPoint(t, metricNamed(t, rm, MetricWaitDuration), attrs(backendMemory, key, AttrOperation.String(OpTryLock), AttrOutcome.String(OutcomeHeld)))
	if !ok || dp.Count != 1 || dp.Sum != 0 {
		t.Errorf("TryLock: wait.duration{try_lock,held} count %d sum %v (found %v), want one 0 (TryLock does not wait)", dp.Count, dp.Sum, ok)
	}
	// Not acquired: nothing held.
	if m, ok := findMetric(rm, MetricHeld); ok {
		if v, _ := sumPoint(t, m, attrs(backendMemory, key)); v != 0 {
			t.Errorf("held = %d after a held TryLock, want 0", v)
		}
	}
}

func TestErrorOutcomeSetsStatusAndErrorType(t *testing.T) {
	h := newHarness(t)
	err := fmt.Errorf("%w: empty key", errInvalidKey)
	_, a := h.inst.StartAcquire(context.Background(), nil, false, "")
	a.End(OutcomeError, 0, err)

	s := h.span(t, SpanLock)
	if s.Status().Code != codes.Error || s.Status().Description != err.Error() {
		t.Errorf("status = %+v, want Error %q", s.Status(), err)
	}
	if got := attrMap(s.Attributes())[AttrErrorType].AsString(); got != "ctxlock.invalid_key" {
		t.Errorf("error.type = %q, want ctxlock.invalid_key", got)
	}
	if !hasEvent(s, "exception") {
		t.Error("no exception event (span.RecordError)")
	}
	rm := h.collect(t)
	set := attrs(backendMemory, AttrKey.String(""), AttrOperation.String(OpLock), AttrOutcome.String(OutcomeError), AttrErrorType.String("ctxlock.invalid_key"))
	if dp, ok := histPoint(t, metricNamed(t, rm, MetricAcquireDuration), set); !ok || dp.Count != 1 {
		t.Errorf("acquire.duration with error.type: count %d, found %v", dp.Count, ok)
	}
}

func TestClosedOutcomeIsAnError(t *testing.T) {
	h := newHarness(t)
	_, a := h.inst.StartAcquire(context.Background(), nil, false, "k")
	a.Attempt(true)
	a.End(OutcomeClosed, 0, fmt.Errorf("lock %q: %w", "k", errClosed))
	s := h.span(t, SpanLock)
	if s.Status().Code != codes.Error {
		t.Errorf("status = %v, want Error", s.Status())
	}
	if got := attrMap(s.Attributes())[AttrErrorType].AsString(); got != "ctxlock.manager_closed" {
		t.Errorf("error.type = %q", got)
	}
}

func TestCanceledIsNotAnErrorUnlessABackendFaultIsJoined(t *testing.T) {
	t.Run("pure cancellation", func(t *testing.T) {
		h := newHarness(t)
		_, a := h.inst.StartAcquire(context.Background(), nil, false, "k")
		a.Attempt(true)
		a.End(OutcomeCanceled, 0, context.DeadlineExceeded)
		s := h.span(t, SpanLock)
		if s.Status().Code != codes.Unset {
			t.Errorf("status = %v, want Unset", s.Status())
		}
		m := attrMap(s.Attributes())
		if m[AttrOutcome].AsString() != OutcomeCanceled {
			t.Errorf("outcome = %v", m[AttrOutcome].String())
		}
		if _, ok := m[AttrErrorType]; ok {
			t.Error("pure cancellation has error.type")
		}
		if !hasEvent(s, "exception") {
			t.Error("the cancellation error should still be recorded as an event")
		}
		rm := h.collect(t)
		set := attrs(backendMemory, AttrKey.String("k"), AttrOperation.String(OpLock), AttrOutcome.String(OutcomeCanceled))
		if dp, ok := histPoint(t, metricNamed(t, rm, MetricWaitDuration), set); !ok || dp.Count != 1 {
			t.Errorf("wait.duration{canceled} count = %d (found %v), want 1", dp.Count, ok)
		}
	})
	t.Run("with backend fault", func(t *testing.T) {
		h := newHarness(t)
		fault := fmt.Errorf("%w: %w", errUnavailable, &net.OpError{Op: "dial", Err: errors.New("connection refused")})
		err := errors.Join(context.DeadlineExceeded, fault)
		_, a := h.inst.StartAcquire(context.Background(), nil, false, "k")
		a.Attempt(false)
		a.End(OutcomeCanceled, 0, err)
		s := h.span(t, SpanLock)
		if s.Status().Code != codes.Error {
			t.Errorf("status = %v, want Error: the wait ended while the backend failed", s.Status())
		}
		if got := attrMap(s.Attributes())[AttrErrorType].AsString(); got != "ctxlock.backend_unavailable" {
			t.Errorf("error.type = %q, want the fault's, ctxlock.backend_unavailable", got)
		}
	})
}

func TestHeldCounterGoesUpAndDown(t *testing.T) {
	h := newHarness(t)
	k1, k2 := AttrKey.String("a"), AttrKey.String("b")
	held := func() (int64, int64) {
		rm := h.collect(t)
		m := metricNamed(t, rm, MetricHeld)
		if s := m.Data.(metricdata.Sum[int64]); s.IsMonotonic {
			t.Error("ctxlock.held is monotonic, want an up-down counter")
		}
		if m.Unit != "{lock}" {
			t.Errorf("ctxlock.held unit = %q", m.Unit)
		}
		v1, _ := sumPoint(t, m, attrs(backendMemory, k1))
		v2, _ := sumPoint(t, m, attrs(backendMemory, k2))
		return v1, v2
	}

	_, a1 := h.inst.StartAcquire(context.Background(), nil, false, "a")
	a1.Attempt(false)
	sc1 := a1.End(OutcomeAcquired, 1, nil)
	_, a2 := h.inst.StartAcquire(context.Background(), nil, true, "b")
	a2.Attempt(false)
	sc2 := a2.End(OutcomeAcquired, 7, nil)
	if v1, v2 := held(); v1 != 1 || v2 != 1 {
		t.Fatalf("held = %d, %d, want 1, 1", v1, v2)
	}

	h.inst.HoldEnded(sc1, "a", 50*time.Millisecond, ReasonUnlocked, nil)
	if v1, v2 := held(); v1 != 0 || v2 != 1 {
		t.Fatalf("after unlock held = %d, %d, want 0, 1", v1, v2)
	}
	h.inst.HoldEnded(sc2, "b", 3*time.Second, ReasonLost, fmt.Errorf("refresh: %w", errLost))
	if v1, v2 := held(); v1 != 0 || v2 != 0 {
		t.Fatalf("after loss held = %d, %d, want 0, 0", v1, v2)
	}

	rm := h.collect(t)
	lost := metricNamed(t, rm, MetricHoldLost)
	if v, _ := sumPoint(t, lost, attrs(backendMemory, k2, AttrHoldEndReason.String(ReasonLost))); v != 1 {
		t.Errorf("hold.lost{reason=lost} = %d, want 1", v)
	}
	if v, ok := sumPoint(t, lost, attrs(backendMemory, k1, AttrHoldEndReason.String(ReasonUnlocked))); ok || v != 0 {
		t.Errorf("an unlocked hold was counted as lost")
	}
	hd := metricNamed(t, rm, MetricHoldDuration)
	if dp, ok := histPoint(t, hd, attrs(backendMemory, k1, AttrHoldEndReason.String(ReasonUnlocked))); !ok || dp.Count != 1 || dp.Sum != 0.05 {
		t.Errorf("hold.duration{unlocked}: count %d sum %v (found %v), want 1, 0.05", dp.Count, dp.Sum, ok)
	}
	if dp, ok := histPoint(t, hd, attrs(backendMemory, k2, AttrHoldEndReason.String(ReasonLost))); !ok || dp.Count != 1 || dp.Sum != 3 {
		t.Errorf("hold.duration{lost}: count %d sum %v (found %v), want 1, 3", dp.Count, dp.Sum, ok)
	}
}

func TestHoldLostSpanIsChildOfAcquireSpan(t *testing.T) {
	for _, tc := range []struct {
		reason, event string
		err           error
	}{
		{ReasonLost, EventHoldLost, errLost},
		{ReasonExpired, EventHoldExpired, errExpired},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			h := newHarness(t)
			_, a := h.inst.StartAcquire(context.Background(), nil, false, "k")
			a.Attempt(false)
			sc := a.End(OutcomeAcquired, 9, nil)

			h.inst.HoldEnded(sc, "k", 2*time.Second, tc.reason, fmt.Errorf("key k: %w", tc.err))

			s := h.span(t, SpanHold)
			if s.Parent().SpanID() != sc.SpanID() || s.SpanContext().TraceID() != sc.TraceID() {
				t.Errorf("hold span parent = %v/%v, want the acquire span %v/%v",
					s.SpanContext().TraceID(), s.Parent().SpanID(), sc.TraceID(), sc.SpanID())
			}
			if !hasEvent(s, tc.event) {
				t.Errorf("no %s event", tc.event)
			}
			if s.Status().Code != codes.Error {
				t.Errorf("status = %v, want Error", s.Status())
			}
			if d := s.EndTime().Sub(s.StartTime()); d < 2*time.Second || d > 3*time.Second {
				t.Errorf("hold span lasts %v, want the hold's 2s", d)
			}
			m := attrMap(s.Attributes())
			if m[AttrHoldEndReason].AsString() != tc.reason || m[AttrKey].AsString() != "k" || m[AttrBackend].AsString() != "memory" {
				t.Errorf("attributes %v", s.Attributes())
			}
			if want := "ctxlock.lock_" + tc.reason; m[AttrErrorType].AsString() != want {
				t.Errorf("error.type = %q, want %q", m[AttrErrorType].AsString(), want)
			}
			rm := h.collect(t)
			if v, _ := sumPoint(t, metricNamed(t, rm, MetricHoldLost), attrs(backendMemory, AttrKey.String("k"), AttrHoldEndReason.String(tc.reason))); v != 1 {
				t.Errorf("hold.lost{%s} = %d, want 1", tc.reason, v)
			}
		})
	}
}

func TestUnlockedAndClosedHoldsEmitNoSpan(t *testing.T) {
	h := newHarness(t)
	for _, reason := range []string{ReasonUnlocked, ReasonClosed} {
		_, a := h.inst.StartAcquire(context.Background(), nil, false, "k")
		sc := a.End(OutcomeAcquired, 1, nil)
		h.inst.HoldEnded(sc, "k", time.Second, reason, nil)
	}
	if ss := h.spans(SpanHold); len(ss) != 0 {
		t.Errorf("%d hold spans for normal ends, want 0", len(ss))
	}
	rm := h.collect(t)
	if m, ok := findMetric(rm, MetricHoldLost); ok && len(m.Data.(metricdata.Sum[int64]).DataPoints) != 0 {
		t.Error("hold.lost has points for normal ends, want none")
	}
}

func TestHoldEndedWithoutAcquireSpanIsARootSpan(t *testing.T) {
	h := newHarness(t)
	h.inst.HoldEnded(trace.SpanContext{}, "k", time.Second, ReasonExpired, errExpired)
	s := h.span(t, SpanHold)
	if s.Parent().IsValid() {
		t.Errorf("parent = %v, want none", s.Parent())
	}
}

func TestWaitDurationHistogram(t *testing.T) {
	h := newHarness(t)
	for range 3 {
		_, a := h.inst.StartAcquire(context.Background(), nil, false, "hot")
		a.Attempt(true)
		a.Attempt(false)
		a.End(OutcomeAcquired, 1, nil)
	}
	rm := h.collect(t)
	key := AttrKey.String("hot")
	m := metricNamed(t, rm, MetricWaitDuration)
	if m.Unit != "s" {
		t.Errorf("unit = %q", m.Unit)
	}
	dp, ok := histPoint(t, m, attrs(backendMemory, key, AttrOperation.String(OpLock), AttrOutcome.String(OutcomeAcquired)))
	if !ok || dp.Count != 3 {
		t.Fatalf("wait.duration count = %d (found %v), want 3", dp.Count, ok)
	}
	if !slices.Equal(dp.Bounds, latencyBuckets) {
		t.Errorf("bounds = %v, want %v", dp.Bounds, latencyBuckets)
	}
	if v, _ := sumPoint(t, metricNamed(t, rm, MetricContention), attrs(backendMemory, key, AttrOperation.String(OpLock))); v != 3 {
		t.Errorf("contention = %d, want 3 (one per call, not per attempt)", v)
	}
	ad, ok := histPoint(t, metricNamed(t, rm, MetricAcquireDuration), attrs(backendMemory, key, AttrOperation.String(OpLock), AttrOutcome.String(OutcomeAcquired)))
	if !ok || ad.Count != 3 {
		t.Errorf("acquire.duration count = %d, want 3", ad.Count)
	}
}

func TestBatchSpansAndMetrics(t *testing.T) {
	h := newHarness(t)
	ctx, b := h.inst.StartBatch(context.Background(), OpRefresh, 5)
	if !trace.SpanFromContext(ctx).SpanContext().IsValid() {
		t.Error("StartBatch did not return the batch span's context")
	}
	b.End(0, nil)
	_, b = h.inst.StartBatch(context.Background(), OpRelease, 3)
	b.End(1, fmt.Errorf("release: %w", errUnavailable))

	r := h.span(t, SpanRefresh)
	if m := attrMap(r.Attributes()); m[AttrBatchSize].AsInt64() != 5 || m[AttrBatchFailed].AsInt64() != 0 ||
		m[AttrOperation].AsString() != OpRefresh || m[AttrBackend].AsString() != "memory" {
		t.Errorf("refresh attributes %v", r.Attributes())
	}
	if r.Status().Code != codes.Unset {
		t.Errorf("refresh status %v", r.Status())
	}
	rel := h.span(t, SpanRelease)
	if m := attrMap(rel.Attributes()); m[AttrBatchSize].AsInt64() != 3 || m[AttrBatchFailed].AsInt64() != 1 ||
		m[AttrErrorType].AsString() != "ctxlock.backend_unavailable" {
		t.Errorf("release attributes %v", rel.Attributes())
	}
	if rel.Status().Code != codes.Error {
		t.Errorf("release status %v, want Error", rel.Status())
	}

	rm := h.collect(t)
	bs := metricNamed(t, rm, MetricRefreshBatchSize)
	hist := bs.Data.(metricdata.Histogram[int64])
	if len(hist.DataPoints) != 1 || hist.DataPoints[0].Count != 1 || hist.DataPoints[0].Sum != 5 {
		t.Errorf("refresh.batch.size = %+v, want one batch of 5 (release batches excluded)", hist.DataPoints)
	}
	bd := metricNamed(t, rm, MetricBatchDuration)
	if dp, ok := histPoint(t, bd, attrs(backendMemory, AttrOperation.String(OpRefresh))); !ok || dp.Count != 1 {
		t.Errorf("batch.duration{refresh} count %d (found %v)", dp.Count, ok)
	}
	if dp, ok := histPoint(t, bd, attrs(backendMemory, AttrOperation.String(OpRelease), AttrErrorType.String("ctxlock.backend_unavailable"))); !ok || dp.Count != 1 {
		t.Errorf("batch.duration{release,error} count %d (found %v)", dp.Count, ok)
	}
}

func TestPendingReleases(t *testing.T) {
	h := newHarness(t)
	h.inst.PendingReleases(1)
	h.inst.PendingReleases(1)
	h.inst.PendingReleases(-1)
	m := metricNamed(t, h.collect(t), MetricReleasePending)
	if v, _ := sumPoint(t, m, attrs(backendMemory)); v != 1 {
		t.Errorf("release.pending = %d, want 1", v)
	}
}

func TestWithTracerOverride(t *testing.T) {
	h := newHarness(t)
	inst := New("memory") // unconfigured: globals still default
	_, a := inst.StartAcquire(context.Background(), h.tp.Tracer("user"), true, "k")
	a.End(OutcomeAcquired, 3, nil)
	s := h.span(t, SpanTryLock)
	if s.InstrumentationScope().Name != "user" {
		t.Errorf("span from scope %q, want the override tracer's", s.InstrumentationScope().Name)
	}
}

func TestEndTwiceAndNilInstrumentation(t *testing.T) {
	h := newHarness(t)
	_, a := h.inst.StartAcquire(context.Background(), nil, false, "k")
	a.End(OutcomeAcquired, 1, nil)
	if sc := a.End(OutcomeError, 0, errors.New("x")); sc.IsValid() {
		t.Error("second End returned a span context")
	}
	a.Attempt(true)
	if n := len(h.sr.Ended()); n != 1 {
		t.Errorf("%d spans, want 1", n)
	}

	var nilInst *Instrumentation
	ctx := context.Background()
	gotCtx, a2 := nilInst.StartAcquire(ctx, nil, false, "k")
	if gotCtx != ctx {
		t.Error("nil instrumentation changed the context")
	}
	a2.Attempt(true)
	a2.End(OutcomeAcquired, 1, nil)
	nilInst.HoldEnded(trace.SpanContext{}, "k", time.Second, ReasonLost, nil)
	_, b := nilInst.StartBatch(ctx, OpRefresh, 1)
	b.End(0, nil)
	nilInst.PendingReleases(1)
	var na *Acquire
	na.Attempt(true)
	na.End(OutcomeHeld, 0, nil)
	var nb *Batch
	nb.End(0, nil)
}

func TestTypedNilProvidersMeanGlobals(t *testing.T) {
	var tp *struct{ trace.TracerProvider }
	if !isNil(tp) {
		t.Fatal("typed nil not detected")
	}
	inst := New("memory", WithTracerProvider(tp), WithMeterProvider(nil))
	if !inst.globalTP || inst.fixedTracer != nil {
		t.Error("a typed-nil tracer provider should mean the global one")
	}
}

// As in contrib: a nil provider option is ignored, it does not undo an
// earlier one.
func TestNilProviderOptionsIgnored(t *testing.T) {
	h := newHarness(t)
	inst := New("memory", WithTracerProvider(h.tp), WithMeterProvider(h.mp), WithTracerProvider(nil), WithMeterProvider(nil), nil)
	if inst.globalTP || inst.fixedTracer == nil || inst.globalMP || inst.fixedMetrics == nil {
		t.Fatalf("nil options after real providers: global tracer %v, global meter %v; want the given providers kept", inst.globalTP, inst.globalMP)
	}
}

func TestFencingTokenBeyondInt64(t *testing.T) {
	kv := fencingToken(1<<63 + 5)
	if kv.Key != AttrFencingToken || kv.Value.AsString() != "9223372036854775813" {
		t.Errorf("got %v=%v", kv.Key, kv.Value.String())
	}
	if kv := fencingToken(12); kv.Value.AsInt64() != 12 {
		t.Errorf("got %v", kv.Value.String())
	}
}

type typedErr struct{}

func (typedErr) Error() string     { return "typed" }
func (typedErr) ErrorType() string { return "my.Type" }

func TestErrorType(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{errLost, "ctxlock.lock_lost"},
		{fmt.Errorf("k: %w", errExpired), "ctxlock.lock_expired"},
		{fmt.Errorf("%w: %w", errUnavailable, &net.OpError{Op: "dial"}), "ctxlock.backend_unavailable"},
		{context.Canceled, "context.Canceled"},
		{fmt.Errorf("wait: %w", context.DeadlineExceeded), "context.DeadlineExceeded"},
		{errors.Join(context.Canceled, errUnavailable), "context.Canceled"},
		// A backend call that timed out is the backend's fault.
		{fmt.Errorf("%w: %w", errUnavailable, fmt.Errorf("goredis: acquire: %w", context.DeadlineExceeded)), "ctxlock.backend_unavailable"},
		// But a loss the caller cancelled with is not a fault of the call.
		{fmt.Errorf("%w: %w", context.DeadlineExceeded, errUnavailable), "context.DeadlineExceeded"},
		{fmt.Errorf("x: %w", typedErr{}), "my.Type"},
		{&net.OpError{Op: "dial"}, "net.OpError"},
		{fmt.Errorf("wrap: %w", &net.OpError{Op: "dial"}), "net.OpError"},
		{errors.New("plain"), ErrorTypeOther},
	} {
		if got := ErrorType(tc.err); got != tc.want {
			t.Errorf("ErrorType(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestAllInstrumentsEmittedWithNamesUnitsAndKinds(t *testing.T) {
	h := exerciseAll(t)
	rm := h.collect(t)
	var got []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			got = append(got, m.Name)
		}
	}
	want := MetricNames()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("emitted %v\nMetricNames %v", got, want)
	}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		// Every metric carries ctxlock.backend.
		var sets []attribute.Set
		switch d := m.Data.(type) {
		case metricdata.Sum[int64]:
			for _, dp := range d.DataPoints {
				sets = append(sets, dp.Attributes)
			}
		case metricdata.Histogram[float64]:
			for _, dp := range d.DataPoints {
				sets = append(sets, dp.Attributes)
			}
		case metricdata.Histogram[int64]:
			for _, dp := range d.DataPoints {
				sets = append(sets, dp.Attributes)
			}
		default:
			t.Errorf("%s: unexpected data %T", m.Name, m.Data)
		}
		for _, s := range sets {
			if v, ok := s.Value(AttrBackend); !ok || v.AsString() != "memory" {
				t.Errorf("%s point %v lacks ctxlock.backend", m.Name, s.ToSlice())
			}
		}
		if m.Description == "" {
			t.Errorf("%s has no description", m.Name)
		}
	}
}

// exerciseAll drives every recording method once or more, so that every
// instrument has data.
func exerciseAll(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t)
	_, a := h.inst.StartAcquire(context.Background(), nil, false, "k")
	a.Attempt(true)
	a.Attempt(false)
	sc := a.End(OutcomeAcquired, 1, nil)
	h.inst.HoldEnded(sc, "k", time.Second, ReasonLost, errLost)
	_, b := h.inst.StartBatch(context.Background(), OpRefresh, 2)
	b.End(0, nil)
	h.inst.PendingReleases(1)
	return h
}
