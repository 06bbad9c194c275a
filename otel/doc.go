// Package ctxlockotel is the OpenTelemetry instrumentation of ctxlock: spans
// and metrics that show lock contention, waits, holds and losses in tracing
// and metrics dashboards.
//
// # Wiring
//
// Applications do not call this package directly. The Manager of package
// ctxlock builds its instrumentation with [New] from its options:
//
//	m := ctxlock.NewManager(backend,
//		ctxlock.WithTracerProvider(tp), // nil or absent: otel.GetTracerProvider()
//		ctxlock.WithMeterProvider(mp),  // nil or absent: otel.GetMeterProvider()
//	)
//	// inside NewManager: ctxlockotel.New(backendName,
//	//	ctxlockotel.WithTracerProvider(tp), ctxlockotel.WithMeterProvider(mp))
//
// A per-lock ctxlock.WithTracer(t) makes that lock's Lock and TryLock spans,
// and its "ctxlock.hold" span, come from t instead of the provider's tracer.
//
// As in the contrib instrumentation libraries, a nil provider means the otel
// global provider. The globals are read at each call, so a Manager built before
// the application calls otel.SetTracerProvider / otel.SetMeterProvider starts
// recording once they are set. Until then (and with the no-op providers of
// go.opentelemetry.io/otel/trace/noop and .../metric/noop) instrumentation is
// off and costs next to nothing: the recording methods make no allocation and
// no span. Set the globals before acquiring locks: ctxlock.held counts a hold
// up when it is acquired and down when it ends, so a hold acquired while
// metrics were off and ended after they came on makes it read one low
// (likewise ctxlock.release.pending, for a release queued before and
// confirmed after: it can then read below 0).
//
// The tracer and meter are named [ScopeName] (this package's import path) with
// version [Version].
//
// # Spans
//
// Every Lock call gets a span "ctxlock.acquire", every TryLock call a span
// "ctxlock.try_acquire", a child of the span in the caller's context, of kind
// internal, covering the whole call including every wait. Backend calls made
// with the context [Instrumentation.StartAcquire] returns nest under it. The
// span carries the key (ctxlock.key), the backend (ctxlock.backend), the number
// of backend attempts (ctxlock.attempts), whether the key was found held
// (ctxlock.contended, with a "ctxlock.contended" event at the first such
// attempt, or when a Lock call first queues behind a holder or waiter of its
// own Manager), the time spent waiting for the holder in seconds
// (ctxlock.wait_time, 0 when it was never found held, and always 0 for a
// TryLock, which does not wait), the fencing token of the hold obtained
// (ctxlock.fencing_token) and the outcome (ctxlock.outcome).
//
// Errors follow the contrib rules: span.RecordError, status Error with the
// error text, and error.type (see [ErrorType]). What counts as an error:
//
//   - OutcomeAcquired and OutcomeHeld are not errors. A TryLock that finds the
//     lock held did its job: it is an outcome, and a leader-election loop
//     would otherwise paint every follower's trace red.
//   - OutcomeCanceled is not an error by itself: the caller's context ended
//     (its own deadline on the wait, or a cancellation), which is the caller's
//     decision, and the caller's span records the error it returns if it
//     treats it as one. The error is still recorded as an exception event.
//     But when a backend fault was joined in (the wait ended while the
//     backend was failing: the error carries ctxlock.ErrUnavailable or another
//     ctxlock error) the span is an error, and error.type names the fault, not
//     the cancellation, because that is what the operator must fix. The
//     cause a context was cancelled with (context.WithCancelCause; Do's
//     context ends with the loss of its lock) is the caller's, not a
//     fault, even when it is a ctxlock error.
//   - OutcomeClosed (the Manager closed) and OutcomeError (a permanent backend
//     error or invalid input) are errors.
//
// When a hold ends abnormally, lost (the backend no longer has the lease) or
// expired (the local validity deadline passed without a confirmed refresh),
// the acquire span has long ended and cannot take an event. Instead
// [Instrumentation.HoldEnded] emits a short span "ctxlock.hold", a child of
// that acquire span, so it shows up in the trace of the request that took the
// lock, right under its ctxlock.acquire (or ctxlock.try_acquire) span. It
// spans the hold (from acquisition to loss), has status Error, the attributes ctxlock.key,
// ctxlock.backend, ctxlock.hold.end_reason, ctxlock.hold_time and error.type,
// and an event "ctxlock.hold.lost" or "ctxlock.hold.expired" at the moment the
// hold ended. Being a child, it is sampled with its trace (parent-based
// sampling); the ctxlock.hold.lost counter counts every loss regardless.
// Holds ended by Unlock or Manager.Close produce no span. A lock with its own
// tracer (ctxlock.WithTracer) has its hold span started by that tracer too
// ([Instrumentation.HoldEndedWithTracer]), like its acquire span.
//
// The background scheduler's backend batches get spans "ctxlock.refresh" and
// "ctxlock.release" with the batch size (ctxlock.batch.size) and the number of
// failed leases (ctxlock.batch.failed); a batch with failures has status Error.
// They are root spans: a batch serves many locks. A Lock call that takes again
// a key whose release by its own Manager is still pending (a Lock/Unlock loop)
// sends that release itself, in line before its attempt or, with a
// ctxlock.Relocker backend, in the same round trip as its acquire: such a
// release is part of the call's ctxlock.acquire span and gets no
// "ctxlock.release" span nor ctxlock.batch.duration record.
//
// # Metrics
//
// Names are in OpenTelemetry semantic-convention style, units are UCUM:
//
//	name                        instrument          unit       attributes
//	ctxlock.acquire.duration    Float64Histogram    s          backend, key, operation, outcome, error.type
//	ctxlock.wait.duration       Float64Histogram    s          backend, key, operation, outcome, error.type
//	ctxlock.contention          Int64Counter        {call}     backend, key, operation
//	ctxlock.held                Int64UpDownCounter  {lock}     backend, key
//	ctxlock.hold.duration       Float64Histogram    s          backend, key, hold.end_reason
//	ctxlock.hold.lost           Int64Counter        {lock}     backend, key, hold.end_reason
//	ctxlock.refresh.batch.size  Int64Histogram      {lease}    backend
//	ctxlock.batch.duration      Float64Histogram    s          backend, operation, error.type
//	ctxlock.release.pending     Int64UpDownCounter  {release}  backend
//
// (attribute names abbreviated: backend is ctxlock.backend, and so on;
// error.type only on failed calls and batches). The
// constants Metric* hold the names and [MetricNames] lists them. The latency
// histograms advise bucket boundaries from 0.5 ms to 60 s ([LatencyBuckets]),
// the hold histogram from 1 ms to a day ([HoldBuckets]). Measurements are made
// with the acquire span's context, so an SDK with exemplars links a slow wait
// to its trace.
//
// ctxlock.wait.duration records every Lock and TryLock call: the time from
// its first attempt that found the key held (or its first queueing behind a
// holder or waiter of its own Manager) to its return, 0 when neither happened
// (a TryLock never waits). Its percentiles answer "how long do callers
// wait for the lock", zeros included, as a database's lock-wait metric
// does; the ratio of ctxlock.contention to its count gives how often
// callers have to wait at all.
//
// Through the OpenTelemetry Prometheus exporter the names become, for
// example, ctxlock_wait_duration_seconds_bucket, ctxlock_contention_total,
// ctxlock_held and ctxlock_hold_lost_total; dashboards/ctxlock.json in this
// folder is a Grafana dashboard built on them.
//
// # Cardinality
//
// The key is an attribute of the per-key metrics (acquire, wait, contention,
// held, hold duration, hold lost) because operators want to find their hot
// keys. That costs one time series per key (times outcome and so on): fine
// for a fixed set of keys (leader election, named jobs, per-tenant locks for a
// few hundred tenants), not for keys built from request data such as an
// order id. With unbounded keys drop the attribute with a View:
//
//	sdkmetric.NewView(
//		sdkmetric.Instrument{Scope: instrumentation.Scope{Name: ctxlockotel.ScopeName}},
//		sdkmetric.Stream{AttributeFilter: attribute.NewDenyKeysFilter(ctxlockotel.AttrKey)},
//	)
//
// or choose keys of bounded cardinality (a shard of the id) before locking.
// Spans always carry the key: traces are sampled and keyed by id anyway.
//
// # Contract with package ctxlock
//
// For each Lock or TryLock call: [Instrumentation.StartAcquire] on entry (and
// use the context it returns for the backend attempts), [Acquire.Attempt]
// after each backend attempt, [Acquire.Queued] before a Lock call blocks
// behind a holder or earlier waiter of the same Manager (so that waiting on a
// local holder counts as contention too), [Acquire.End] once on return. Start
// the acquire recording before any wait of the call, so that the span and
// ctxlock.acquire.duration cover it, and record every call, including those
// rejected at once (invalid key or option: outcome error). For each hold
// that End reported as OutcomeAcquired: [Instrumentation.HoldEnded] (or
// [Instrumentation.HoldEndedWithTracer], or [Instrumentation.HoldEndedAt]
// when it is recorded some time after it ended) exactly once, when the hold ends for
// whatever reason, with the span context End returned, and never before End
// (a hold that ends first is recorded right after End), so that ctxlock.held
// never reads below zero. For each background backend batch: [Instrumentation.StartBatch]
// and [Batch.End]. [Instrumentation.PendingReleases] +1 whenever a release
// is queued (after Unlock, after a hold ended otherwise, or for an acquire
// of unknown outcome), −1 when it is settled, −n for releases Close
// abandons.
package ctxlockotel
