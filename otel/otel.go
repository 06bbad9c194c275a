package ctxlockotel

import (
	"context"
	"fmt"
	"math"
	"reflect"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// ScopeName is the instrumentation scope name: this package's import path.
const ScopeName = "github.com/ctxlock/ctxlock/otel"

// Version is the instrumentation version, reported as the scope version of
// every tracer and meter this package creates.
const Version = "0.1.0"

// Outcome of an acquire call: the value of the ctxlock.outcome attribute.
const (
	OutcomeAcquired = "acquired" // the lock was taken
	OutcomeHeld     = "held"     // TryLock found it held elsewhere (not an error)
	OutcomeCanceled = "canceled" // ctx ended while waiting (not an error by itself, see the package doc)
	OutcomeClosed   = "closed"   // the manager closed (an error)
	OutcomeError    = "error"    // a permanent error or invalid input (an error)
)

// Reasons a hold ended: the value of the ctxlock.hold.end_reason attribute.
const (
	ReasonUnlocked = "unlocked" // Unlock ended it
	ReasonLost     = "lost"     // the backend said the lease is no longer owned
	ReasonExpired  = "expired"  // the local validity deadline passed without a confirmed refresh
	ReasonClosed   = "closed"   // Manager.Close ended it
)

// Batch operations: the value of the ctxlock.operation attribute on batch
// spans and metrics.
const (
	OpRefresh = "refresh"
	OpRelease = "release"
)

// The otel global providers as they are before anyone calls
// otel.SetTracerProvider / otel.SetMeterProvider: delegating no-ops. While
// otel.GetTracerProvider() still returns this very value, tracing through the
// globals is off and costs nothing. Nil when a provider had already been set
// when this package was initialized (then the globals are always used).
var (
	defaultTP = initialTracerProvider()
	defaultMP = initialMeterProvider()
)

const globalPkg = "go.opentelemetry.io/otel/internal/global"

func initialTracerProvider() trace.TracerProvider {
	if tp := otel.GetTracerProvider(); isGlobalDelegate(tp) {
		return tp
	}
	return nil
}

func initialMeterProvider() metric.MeterProvider {
	if mp := otel.GetMeterProvider(); isGlobalDelegate(mp) {
		return mp
	}
	return nil
}

// isGlobalDelegate reports whether v is one of otel's internal delegating
// global providers, the value the globals hold until they are set.
func isGlobalDelegate(v any) bool {
	t := reflect.TypeOf(v)
	return t != nil && t.Kind() == reflect.Pointer && t.Elem().PkgPath() == globalPkg
}

// Instrumentation records spans and metrics for one Manager. Its methods are
// safe for concurrent use; a nil *Instrumentation records nothing.
//
// Applications never need it: ctxlock.NewManager makes one from its
// WithTracerProvider and WithMeterProvider options. It is exported for
// package ctxlock (see "Contract with package ctxlock" in the package
// documentation), and for tests that check what a Manager records.
type Instrumentation struct {
	backendAttr    attribute.KeyValue
	backendAddOpts []metric.AddOption // {WithAttributeSet(backend)}

	// Tracing: fixedTracer when New was given a provider; globalTP when it was
	// given nil (resolve otel.GetTracerProvider() at each call). Neither: off.
	fixedTracer trace.Tracer
	globalTP    bool
	tcache      atomic.Pointer[tracerCache]

	// Metrics, likewise.
	fixedMetrics *instruments
	globalMP     bool
	mcache       atomic.Pointer[meterCache]
}

type tracerCache struct {
	tp     trace.TracerProvider
	tracer trace.Tracer
}

type meterCache struct {
	mp  metric.MeterProvider
	ins *instruments
}

// Option configures New.
type Option func(*config)

type config struct {
	tp trace.TracerProvider
	mp metric.MeterProvider
}

// WithTracerProvider sets the tracer provider. A nil provider is ignored:
// without one, the otel global provider is used.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) {
		if !isNil(tp) {
			c.tp = tp
		}
	}
}

// WithMeterProvider sets the meter provider. A nil provider is ignored:
// without one, the otel global provider is used.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) {
		if !isNil(mp) {
			c.mp = mp
		}
	}
}

// New returns instrumentation for a Manager whose backend is named backend
// (the value of the ctxlock.backend attribute, e.g. "memory", "redis" or "redlock").
//
// Without WithTracerProvider / WithMeterProvider it uses the otel globals,
// read at each call: until the application calls otel.SetTracerProvider /
// otel.SetMeterProvider, nothing is recorded and the recording methods do
// not allocate. The no-op providers of go.opentelemetry.io/otel/trace/noop
// and .../metric/noop also turn the corresponding signal off at no cost.
func New(backend string, opts ...Option) *Instrumentation {
	var c config
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	tp, mp := c.tp, c.mp
	i := &Instrumentation{backendAttr: AttrBackend.String(backend)}
	i.backendAddOpts = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(i.backendAttr))}
	switch {
	case isNil(tp):
		i.globalTP = true
	case isNoopTracerProvider(tp):
	default:
		i.fixedTracer = newTracer(tp)
	}
	switch {
	case isNil(mp):
		i.globalMP = true
	case isNoopMeterProvider(mp):
	default:
		i.fixedMetrics = newInstruments(mp)
	}
	return i
}

// isNil reports whether v is nil or a typed nil pointer (a provider variable
// left unset), which must be treated as "not configured", as contrib does.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Map, reflect.Func, reflect.Slice, reflect.Chan:
		return rv.IsNil()
	}
	return false
}

func isNoopTracerProvider(tp trace.TracerProvider) bool {
	switch tp.(type) {
	case tracenoop.TracerProvider, *tracenoop.TracerProvider:
		return true
	}
	return false
}

func isNoopMeterProvider(mp metric.MeterProvider) bool {
	switch mp.(type) {
	case metricnoop.MeterProvider, *metricnoop.MeterProvider:
		return true
	}
	return false
}

func newTracer(tp trace.TracerProvider) trace.Tracer {
	return tp.Tracer(ScopeName, trace.WithInstrumentationVersion(Version))
}

// sameProvider reports whether a and b are the same provider, without
// panicking on providers that cannot be compared: of an incomparable type,
// or of a comparable one holding an incomparable value in an interface
// field. Those are assumed unchanged.
func sameProvider(a, b any) bool {
	if reflect.TypeOf(a) != reflect.TypeOf(b) {
		return false
	}
	if !reflect.ValueOf(a).Comparable() || !reflect.ValueOf(b).Comparable() {
		return true
	}
	return a == b
}

// Enabled reports whether anything is recorded now: a provider was given,
// or the otel globals have been set. It does not allocate.
func (i *Instrumentation) Enabled() bool {
	return i.tracer() != nil || i.metrics() != nil
}

// tracer returns the tracer to use now, or nil when tracing is off.
// It does not allocate when off, nor once the tracer is cached.
func (i *Instrumentation) tracer() trace.Tracer {
	if i == nil {
		return nil
	}
	if i.fixedTracer != nil {
		return i.fixedTracer
	}
	if !i.globalTP {
		return nil
	}
	tp := otel.GetTracerProvider()
	if tp == defaultTP || isNoopTracerProvider(tp) {
		return nil
	}
	if c := i.tcache.Load(); c != nil && sameProvider(c.tp, tp) {
		return c.tracer
	}
	c := &tracerCache{tp: tp, tracer: newTracer(tp)}
	i.tcache.Store(c)
	return c.tracer
}

// metrics returns the instruments to use now, or nil when metrics are off.
// It does not allocate when off, nor once the instruments are cached.
func (i *Instrumentation) metrics() *instruments {
	if i == nil {
		return nil
	}
	if i.fixedMetrics != nil {
		return i.fixedMetrics
	}
	if !i.globalMP {
		return nil
	}
	mp := otel.GetMeterProvider()
	if mp == defaultMP || isNoopMeterProvider(mp) {
		return nil
	}
	if c := i.mcache.Load(); c != nil && sameProvider(c.mp, mp) {
		return c.ins
	}
	c := &meterCache{mp: mp, ins: newInstruments(mp)}
	i.mcache.Store(c)
	return c.ins
}

// instruments are the metric instruments of one meter.
type instruments struct {
	acquireDuration  metric.Float64Histogram
	waitDuration     metric.Float64Histogram
	contention       metric.Int64Counter
	held             metric.Int64UpDownCounter
	holdDuration     metric.Float64Histogram
	holdLost         metric.Int64Counter
	refreshBatchSize metric.Int64Histogram
	batchDuration    metric.Float64Histogram
	releasePending   metric.Int64UpDownCounter
}

// newInstruments returns mp's instruments, or nil (metrics off) when mp
// hands out a nil meter.
func newInstruments(mp metric.MeterProvider) *instruments {
	m := mp.Meter(ScopeName, metric.WithInstrumentationVersion(Version))
	if isNil(m) {
		otel.Handle(fmt.Errorf("ctxlockotel: meter provider %T returned a nil meter: metrics off", mp))
		return nil
	}
	var ins instruments
	var err error
	handle := func(e error) {
		if e != nil {
			otel.Handle(e)
		}
	}
	noop := metricnoop.Meter{}

	ins.acquireDuration, err = m.Float64Histogram(MetricAcquireDuration,
		metric.WithUnit("s"),
		metric.WithDescription("Duration of Lock and TryLock calls, from entry to return."),
		metric.WithExplicitBucketBoundaries(latencyBuckets...))
	handle(err)
	if ins.acquireDuration == nil {
		ins.acquireDuration, _ = noop.Float64Histogram(MetricAcquireDuration)
	}

	ins.waitDuration, err = m.Float64Histogram(MetricWaitDuration,
		metric.WithUnit("s"),
		metric.WithDescription("Time Lock and TryLock calls spent waiting because the key was held (0 when it never was)."),
		metric.WithExplicitBucketBoundaries(latencyBuckets...))
	handle(err)
	if ins.waitDuration == nil {
		ins.waitDuration, _ = noop.Float64Histogram(MetricWaitDuration)
	}

	ins.contention, err = m.Int64Counter(MetricContention,
		metric.WithUnit("{call}"),
		metric.WithDescription("Lock and TryLock calls that found the key held by another owner."))
	handle(err)
	if ins.contention == nil {
		ins.contention, _ = noop.Int64Counter(MetricContention)
	}

	ins.held, err = m.Int64UpDownCounter(MetricHeld,
		metric.WithUnit("{lock}"),
		metric.WithDescription("Locks currently held."))
	handle(err)
	if ins.held == nil {
		ins.held, _ = noop.Int64UpDownCounter(MetricHeld)
	}

	ins.holdDuration, err = m.Float64Histogram(MetricHoldDuration,
		metric.WithUnit("s"),
		metric.WithDescription("How long holds lasted, by the reason they ended."),
		metric.WithExplicitBucketBoundaries(holdBuckets...))
	handle(err)
	if ins.holdDuration == nil {
		ins.holdDuration, _ = noop.Float64Histogram(MetricHoldDuration)
	}

	ins.holdLost, err = m.Int64Counter(MetricHoldLost,
		metric.WithUnit("{lock}"),
		metric.WithDescription("Holds that ended before Unlock: lost or expired."))
	handle(err)
	if ins.holdLost == nil {
		ins.holdLost, _ = noop.Int64Counter(MetricHoldLost)
	}

	ins.refreshBatchSize, err = m.Int64Histogram(MetricRefreshBatchSize,
		metric.WithUnit("{lease}"),
		metric.WithDescription("Leases per refresh batch."),
		metric.WithExplicitBucketBoundaries(batchSizeBuckets...))
	handle(err)
	if ins.refreshBatchSize == nil {
		ins.refreshBatchSize, _ = noop.Int64Histogram(MetricRefreshBatchSize)
	}

	ins.batchDuration, err = m.Float64Histogram(MetricBatchDuration,
		metric.WithUnit("s"),
		metric.WithDescription("Duration of refresh and release batches (one backend round trip)."),
		metric.WithExplicitBucketBoundaries(latencyBuckets...))
	handle(err)
	if ins.batchDuration == nil {
		ins.batchDuration, _ = noop.Float64Histogram(MetricBatchDuration)
	}

	ins.releasePending, err = m.Int64UpDownCounter(MetricReleasePending,
		metric.WithUnit("{release}"),
		metric.WithDescription("Releases not yet confirmed by the backend (after Unlock, after a hold ended otherwise, or for an acquire of unknown outcome)."))
	handle(err)
	if ins.releasePending == nil {
		ins.releasePending, _ = noop.Int64UpDownCounter(MetricReleasePending)
	}
	return &ins
}

// Acquire records one Lock or TryLock call. It is a small value meant to live
// on the caller's stack: the zero Acquire (returned when nothing is
// configured) records nothing, and its methods do not allocate.
type Acquire struct {
	i         *Instrumentation // nil: record nothing
	m         *instruments     // nil: no metrics
	span      trace.Span       // nil: no span
	ctx       context.Context  // the acquire span's context, for exemplars
	key       string
	start     time.Time
	firstHeld time.Time
	attempts  int
	try       bool
	contended bool
}

// StartAcquire starts recording a Lock (try=false) or TryLock (try=true) call
// on key. tracer overrides the provider's tracer when non-nil (WithTracer).
//
// The acquire span ("ctxlock.acquire" or "ctxlock.try_acquire") is a child of the
// span in ctx, the caller's. The returned context carries it: pass it to the
// backend calls so that their own spans (redisotel, say) nest under it.
// Call [Acquire.Attempt] after each backend attempt, [Acquire.Queued] before
// blocking behind a local holder or waiter, and [Acquire.End] once.
func (i *Instrumentation) StartAcquire(ctx context.Context, tracer trace.Tracer, try bool, key string) (context.Context, Acquire) {
	if i == nil {
		return ctx, Acquire{}
	}
	m := i.metrics()
	if tracer == nil {
		tracer = i.tracer()
	}
	if m == nil && tracer == nil {
		return ctx, Acquire{}
	}
	a := Acquire{i: i, m: m, key: key, try: try, start: time.Now()}
	parent := ctx
	if parent == nil {
		parent = context.Background()
	}
	a.ctx = parent
	if tracer != nil {
		name := SpanLock
		if try {
			name = SpanTryLock
		}
		var sctx context.Context
		sctx, a.span = tracer.Start(parent, name,
			trace.WithSpanKind(trace.SpanKindInternal),
			trace.WithTimestamp(a.start),
			trace.WithAttributes(AttrKey.String(key), i.backendAttr))
		a.ctx = sctx
		if ctx != nil {
			ctx = sctx
		}
	}
	return ctx, a
}

func (a *Acquire) operation() string {
	if a.try {
		return OpTryLock
	}
	return OpLock
}

// Attempt records one backend attempt; held reports that the key was found
// held by another owner. The first held attempt marks the call contended: it
// adds the "ctxlock.contended" event to the span, counts ctxlock.contention,
// and starts the wait time.
func (a *Acquire) Attempt(held bool) {
	if a == nil || a.i == nil {
		return
	}
	a.attempts++
	if !held || a.contended {
		return
	}
	a.markContended()
}

// Queued records that a Lock call is about to block behind a holder or
// earlier waiters of the same Manager, with no backend attempt of its own:
// the key is held, as surely as when an attempt finds it held. The first
// call marks the acquire call contended exactly as the first held
// [Acquire.Attempt] does (the "ctxlock.contended" event, one ctxlock.contention,
// the start of the wait time); it does not count an attempt. Later calls,
// and calls after a held attempt, do nothing.
func (a *Acquire) Queued() {
	if a == nil || a.i == nil || a.contended {
		return
	}
	a.markContended()
}

// markContended marks the call contended now: event, counter, wait start.
func (a *Acquire) markContended() {
	a.contended = true
	a.firstHeld = time.Now()
	if a.span != nil {
		a.span.AddEvent(EventContended, trace.WithTimestamp(a.firstHeld),
			trace.WithAttributes(AttrAttempts.Int(a.attempts)))
	}
	if a.m != nil {
		a.m.contention.Add(a.ctx, 1, metric.WithAttributes(
			a.i.backendAttr, AttrKey.String(a.key), AttrOperation.String(a.operation())))
	}
}

// End ends the call with an outcome (Outcome*), the fencing token when
// acquired, and the error returned. It returns the span context of the
// acquire span (for linking the hold's later events; pass it to
// [Instrumentation.HoldEnded]), or the zero SpanContext when not tracing.
// End must be called once; later calls do nothing.
//
// When the outcome is OutcomeAcquired, ctxlock.held goes up by one: the
// caller must later call HoldEnded exactly once for that hold.
func (a *Acquire) End(outcome string, token uint64, err error) trace.SpanContext {
	if a == nil || a.i == nil {
		return trace.SpanContext{}
	}
	now := time.Now()
	var wait time.Duration // a TryLock does not wait
	if a.contended && !a.try {
		wait = now.Sub(a.firstHeld)
	}
	failed, etype := classify(outcome, err)
	var sc trace.SpanContext
	if s := a.span; s != nil {
		attrs := make([]attribute.KeyValue, 0, 6)
		attrs = append(attrs,
			AttrOutcome.String(outcome),
			AttrAttempts.Int(a.attempts),
			AttrContended.Bool(a.contended))
		attrs = append(attrs, AttrWaitTime.Float64(wait.Seconds()))
		if outcome == OutcomeAcquired && token != 0 {
			attrs = append(attrs, fencingToken(token))
		}
		if etype != "" {
			attrs = append(attrs, AttrErrorType.String(etype))
		}
		s.SetAttributes(attrs...)
		if err != nil {
			s.RecordError(err, trace.WithTimestamp(now))
		}
		if failed {
			s.SetStatus(codes.Error, statusMessage(outcome, err))
		}
		sc = s.SpanContext()
		s.End(trace.WithTimestamp(now))
	}
	if m := a.m; m != nil {
		keyAttr := AttrKey.String(a.key)
		outAttr := AttrOutcome.String(outcome)
		var set attribute.Set
		if etype != "" {
			set = attribute.NewSet(a.i.backendAttr, keyAttr, AttrOperation.String(a.operation()), outAttr, AttrErrorType.String(etype))
		} else {
			set = attribute.NewSet(a.i.backendAttr, keyAttr, AttrOperation.String(a.operation()), outAttr)
		}
		m.acquireDuration.Record(a.ctx, now.Sub(a.start).Seconds(), metric.WithAttributeSet(set))
		m.waitDuration.Record(a.ctx, wait.Seconds(), metric.WithAttributeSet(set))
		if outcome == OutcomeAcquired {
			m.held.Add(a.ctx, 1, metric.WithAttributes(a.i.backendAttr, keyAttr))
		}
	}
	*a = Acquire{}
	return sc
}

// classify decides whether an acquire outcome is a failure (span status
// Error) and its error.type.
func classify(outcome string, err error) (failed bool, etype string) {
	switch outcome {
	case OutcomeAcquired, OutcomeHeld:
		return false, ""
	case OutcomeCanceled:
		// The caller gave up (its deadline or cancellation): not a failure of
		// the lock, unless a backend fault was joined in, i.e. the wait ended
		// while the backend was failing.
		if hasFault(err) {
			return true, errorType(err, true)
		}
		return false, ""
	case OutcomeClosed, OutcomeError:
		if err == nil {
			return true, ErrorTypeOther
		}
		return true, ErrorType(err)
	}
	if err != nil {
		return true, ErrorType(err)
	}
	return false, ""
}

func statusMessage(outcome string, err error) string {
	if err != nil {
		return err.Error()
	}
	return outcome
}

// fencingToken is the ctxlock.fencing_token attribute: an int, or a string for
// tokens beyond int64.
func fencingToken(token uint64) attribute.KeyValue {
	if token > math.MaxInt64 {
		return attribute.String(string(AttrFencingToken), formatUint(token))
	}
	return AttrFencingToken.Int64(int64(token))
}

func formatUint(u uint64) string {
	var b [20]byte
	n := len(b)
	for {
		n--
		b[n] = byte('0' + u%10)
		u /= 10
		if u == 0 {
			return string(b[n:])
		}
	}
}

// HoldEnded records the end of a hold on key that lasted held, for reason
// (Reason*), with the error that ended it (nil for unlocked). acquired is the
// acquire span's context, as returned by [Acquire.End].
//
// It decrements ctxlock.held, records ctxlock.hold.duration, and for an
// abnormal end (ReasonLost, ReasonExpired, or any reason other than
// ReasonUnlocked and ReasonClosed) counts ctxlock.hold.lost and emits a
// "ctxlock.hold" span: a child of the acquire span (so it appears in the
// trace of the request that took the lock), starting when the hold began
// (now − held) and ending now, with status Error, the error.type attribute
// and a "ctxlock.hold.lost" or "ctxlock.hold.expired" event at the moment
// the hold ended. When acquired is not valid the span is a root span.
func (i *Instrumentation) HoldEnded(acquired trace.SpanContext, key string, held time.Duration, reason string, err error) {
	i.HoldEndedWithTracer(nil, acquired, key, held, reason, err)
}

// HoldEndedWithTracer is [Instrumentation.HoldEnded] with the "ctxlock.hold"
// span started by tracer, when not nil, instead of the Instrumentation's:
// the tracer of the lock's acquire span (ctxlock.WithTracer), as for
// [Instrumentation.StartAcquire].
func (i *Instrumentation) HoldEndedWithTracer(tracer trace.Tracer, acquired trace.SpanContext, key string, held time.Duration, reason string, err error) {
	if i == nil {
		return
	}
	i.HoldEndedAt(tracer, acquired, key, held, time.Now(), reason, err)
}

// HoldEndedAt is [Instrumentation.HoldEndedWithTracer] for a hold that ended
// at ended, which may be some time before the call: the "ctxlock.hold" span
// runs from ended − held to ended, its event is at ended. The Manager records
// hold ends after releasing its mutex, on another goroutine for those the
// scheduler ends, behind the user's logger, tracer and meter: a span
// timestamped at the call would be shifted by that delay.
func (i *Instrumentation) HoldEndedAt(tracer trace.Tracer, acquired trace.SpanContext, key string, held time.Duration, ended time.Time, reason string, err error) {
	if i == nil {
		return
	}
	m := i.metrics()
	if tracer == nil {
		tracer = i.tracer()
	}
	if m == nil && tracer == nil {
		return
	}
	abnormal := reason != ReasonUnlocked && reason != ReasonClosed
	keyAttr := AttrKey.String(key)
	reasonAttr := AttrHoldEndReason.String(reason)
	now := ended
	if now.IsZero() {
		now = time.Now()
	}
	ctx := context.Background()
	if acquired.IsValid() {
		ctx = trace.ContextWithSpanContext(ctx, acquired)
	}
	if tracer != nil && abnormal {
		// Why the hold ended (the ctxlock sentinel err starts with), not
		// the fault behind it: a refresh that timed out must not make an
		// expiry read "context.DeadlineExceeded".
		etype := findSentinel(err, false, 0)
		if etype == "" {
			etype = errorType(err, true)
		}
		if etype == "" {
			etype = ErrorTypeOther
		}
		var span trace.Span
		ctx, span = tracer.Start(ctx, SpanHold,
			trace.WithSpanKind(trace.SpanKindInternal),
			trace.WithTimestamp(now.Add(-held)),
			trace.WithAttributes(keyAttr, i.backendAttr, reasonAttr,
				AttrHoldTime.Float64(held.Seconds()), AttrErrorType.String(etype)))
		span.AddEvent(holdEventName(reason), trace.WithTimestamp(now))
		if err != nil {
			span.RecordError(err, trace.WithTimestamp(now))
		}
		span.SetStatus(codes.Error, statusMessage(reason, err))
		span.End(trace.WithTimestamp(now))
	}
	if m != nil {
		m.held.Add(ctx, -1, metric.WithAttributes(i.backendAttr, keyAttr))
		m.holdDuration.Record(ctx, held.Seconds(), metric.WithAttributes(i.backendAttr, keyAttr, reasonAttr))
		if abnormal {
			m.holdLost.Add(ctx, 1, metric.WithAttributes(i.backendAttr, keyAttr, reasonAttr))
		}
	}
}

func holdEventName(reason string) string {
	switch reason {
	case ReasonLost:
		return EventHoldLost
	case ReasonExpired:
		return EventHoldExpired
	}
	return "ctxlock.hold." + reason
}

// Batch records one refresh or release batch. Like [Acquire] it is a small
// value; the zero Batch records nothing and does not allocate.
type Batch struct {
	i     *Instrumentation
	m     *instruments
	span  trace.Span
	ctx   context.Context
	op    string
	start time.Time
}

// StartBatch starts recording a backend batch of n leases for op (OpRefresh
// or OpRelease). The batch span ("ctxlock.refresh" or "ctxlock.release") is a
// child of the span in ctx, if any; the returned context carries it, for the
// backend call. For OpRefresh it records n in ctxlock.refresh.batch.size.
func (i *Instrumentation) StartBatch(ctx context.Context, op string, n int) (context.Context, Batch) {
	return i.startBatch(ctx, op, n, time.Now())
}

// RecordBatch records a batch of n leases for op that succeeded and is over
// already, from start to end: a release that Unlock performed in line on an
// in-process store (ctxlock.InstantReleaser), recorded once the Manager's
// mutex is released.
func (i *Instrumentation) RecordBatch(op string, n int, start, end time.Time) {
	_, b := i.startBatch(context.Background(), op, n, start)
	b.end(0, nil, end)
}

func (i *Instrumentation) startBatch(ctx context.Context, op string, n int, start time.Time) (context.Context, Batch) {
	if i == nil {
		return ctx, Batch{}
	}
	m := i.metrics()
	tracer := i.tracer()
	if m == nil && tracer == nil {
		return ctx, Batch{}
	}
	b := Batch{i: i, m: m, op: op, start: start}
	parent := ctx
	if parent == nil {
		parent = context.Background()
	}
	b.ctx = parent
	if tracer != nil {
		sctx, span := tracer.Start(parent, batchSpanName(op),
			trace.WithSpanKind(trace.SpanKindInternal),
			trace.WithTimestamp(b.start),
			trace.WithAttributes(i.backendAttr, AttrOperation.String(op), AttrBatchSize.Int(n)))
		b.span, b.ctx = span, sctx
		if ctx != nil {
			ctx = sctx
		}
	}
	if m != nil && op == OpRefresh {
		m.refreshBatchSize.Record(b.ctx, int64(n), metric.WithAttributes(i.backendAttr))
	}
	return ctx, b
}

func batchSpanName(op string) string {
	switch op {
	case OpRefresh:
		return SpanRefresh
	case OpRelease:
		return SpanRelease
	}
	return "ctxlock." + op
}

// End ends the batch: failed leases out of n, err the first failure. A batch
// with failures (failed > 0 or err != nil) gets span status Error and an
// error.type, on the span and on ctxlock.batch.duration. End must be called
// once; later calls do nothing.
func (b *Batch) End(failed int, err error) {
	b.end(failed, err, time.Now())
}

func (b *Batch) end(failed int, err error, now time.Time) {
	if b == nil || b.i == nil {
		return
	}
	var etype string
	if err != nil || failed > 0 {
		etype = ErrorType(err)
		if etype == "" {
			etype = ErrorTypeOther
		}
	}
	if s := b.span; s != nil {
		s.SetAttributes(AttrBatchFailed.Int(failed))
		if etype != "" {
			s.SetAttributes(AttrErrorType.String(etype))
			if err != nil {
				s.RecordError(err, trace.WithTimestamp(now))
			}
			s.SetStatus(codes.Error, statusMessage("failed leases", err))
		}
		s.End(trace.WithTimestamp(now))
	}
	if m := b.m; m != nil {
		var opt metric.RecordOption
		if etype != "" {
			opt = metric.WithAttributes(b.i.backendAttr, AttrOperation.String(b.op), AttrErrorType.String(etype))
		} else {
			opt = metric.WithAttributes(b.i.backendAttr, AttrOperation.String(b.op))
		}
		m.batchDuration.Record(b.ctx, now.Sub(b.start).Seconds(), opt)
	}
	*b = Batch{}
}

// PendingReleases adds delta to the number of releases waiting for backend
// confirmation (ctxlock.release.pending): +1 whenever the Manager queues a
// release (after Unlock, after a hold ended otherwise, or for an acquire of
// unknown outcome), −1 when the backend confirms it or the lease has
// lapsed, −n for the releases Close abandons.
func (i *Instrumentation) PendingReleases(delta int) {
	if delta == 0 {
		return
	}
	if m := i.metrics(); m != nil {
		m.releasePending.Add(context.Background(), int64(delta), i.backendAddOpts...)
	}
}
