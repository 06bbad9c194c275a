package ctxlockotel

import "go.opentelemetry.io/otel/attribute"

// Span names. The acquire spans are named after the operation (acquire for
// Lock, try_acquire for TryLock); the batch spans after the background
// operation; the hold span is emitted only when a hold ends abnormally (lost
// or expired), see [Instrumentation.HoldEnded].
const (
	SpanLock    = "ctxlock.acquire"     // one blocking Lock call, from entry to return
	SpanTryLock = "ctxlock.try_acquire" // one TryLock call
	SpanRelease = "ctxlock.release"     // one background backend Release batch, or an Unlock's release in line on an in-process store (not the releases a Lock call sends itself)
	SpanRefresh = "ctxlock.refresh"     // one backend Extend (refresh) batch
	SpanHold    = "ctxlock.hold"        // a hold that was lost or expired, child of its acquire span
)

// Span event names.
const (
	// EventContended is added to the acquire span when an attempt first finds
	// the key held by another owner, or a Lock call first queues behind a
	// holder or waiter of its own Manager: the moment the call started to
	// wait. Its ctxlock.attempts attribute is the number of backend attempts
	// made before (0 for a call that queued locally first).
	EventContended = "ctxlock.contended"
	// EventHoldLost is added to the hold span when the backend reported the
	// lease no longer owned (ReasonLost).
	EventHoldLost = "ctxlock.hold.lost"
	// EventHoldExpired is added to the hold span when the local validity
	// deadline passed without a confirmed refresh (ReasonExpired).
	EventHoldExpired = "ctxlock.hold.expired"
)

// Metric instrument names, in OpenTelemetry semantic-convention style. See the
// package documentation (and README.md) for the instrument kind, unit and
// attributes of each one; [MetricNames] lists them all.
const (
	// MetricAcquireDuration is a Float64Histogram (s) of the duration of Lock and
	// TryLock calls, from entry to return, whatever the outcome.
	// Attributes: backend, key, operation (lock|try_lock), outcome, error.type.
	MetricAcquireDuration = "ctxlock.acquire.duration"
	// MetricWaitDuration is a Float64Histogram (s) of the time Lock and
	// TryLock calls spent waiting because the key was held: from the first
	// attempt that found it held (or the moment a Lock call first queued
	// behind a holder or waiter of its own Manager) to the return. Every call records it, 0
	// when it never found the key held (and always for TryLock, which does
	// not wait), so its count is the number of calls.
	// Attributes: backend, key, operation, outcome, error.type (the same set
	// as MetricAcquireDuration).
	MetricWaitDuration = "ctxlock.wait.duration"
	// MetricContention is an Int64Counter ({call}) of Lock and TryLock calls
	// that found the key held at least once, counted once per call: when its
	// first attempt that found the key held returns, or when a Lock call first
	// queues behind a holder or earlier waiter of its own Manager (with no
	// backend attempt), whichever comes first. Attributes: backend, key,
	// operation.
	MetricContention = "ctxlock.contention"
	// MetricHeld is an Int64UpDownCounter ({lock}) of the locks currently held
	// through the Manager. Attributes: backend, key.
	MetricHeld = "ctxlock.held"
	// MetricHoldDuration is a Float64Histogram (s) of how long holds lasted,
	// recorded when a hold ends. Attributes: backend, key, hold.end_reason.
	MetricHoldDuration = "ctxlock.hold.duration"
	// MetricHoldLost is an Int64Counter ({lock}) of holds that ended
	// abnormally, before Unlock: reason lost or expired. Attributes: backend,
	// key, hold.end_reason.
	MetricHoldLost = "ctxlock.hold.lost"
	// MetricRefreshBatchSize is an Int64Histogram ({lease}) of the number of
	// leases per refresh (Extend) batch. Attributes: backend.
	MetricRefreshBatchSize = "ctxlock.refresh.batch.size"
	// MetricBatchDuration is a Float64Histogram (s) of the duration of refresh
	// and release batches (one backend round trip each) that the Manager's
	// scheduler sends in the background. A release that a Lock call sends
	// itself (its own pending release of the key it takes again, in line or
	// in one Relock round trip with its acquire) is part of that call and is
	// not recorded here. A release that Unlock performs in line on an
	// in-process store (ctxlock.InstantReleaser: the memory backend) is
	// recorded as a batch of one. Attributes: backend, operation
	// (refresh|release),
	// error.type.
	MetricBatchDuration = "ctxlock.batch.duration"
	// MetricReleasePending is an Int64UpDownCounter ({release}) of releases
	// not yet confirmed by the backend: queued by Unlock (unless it released
	// in line, see ctxlock.InstantReleaser), for holds that
	// ended otherwise (lost, expired, closed), and for acquire attempts whose
	// outcome is unknown. Releases that Manager.Close abandons stop counting
	// when it returns. Attributes: backend.
	MetricReleasePending = "ctxlock.release.pending"
)

// MetricNames returns the names of every metric instrument this package
// creates, in a fresh slice.
func MetricNames() []string {
	return []string{
		MetricAcquireDuration,
		MetricWaitDuration,
		MetricContention,
		MetricHeld,
		MetricHoldDuration,
		MetricHoldLost,
		MetricRefreshBatchSize,
		MetricBatchDuration,
		MetricReleasePending,
	}
}

// Attribute keys on spans and metrics.
var (
	// AttrKey is the lock key as given to NewLock (without the Manager's
	// namespace, ctxlock.WithNamespace), on spans and on the per-key metrics. See "Cardinality" in the package doc.
	AttrKey = attribute.Key("ctxlock.key")
	// AttrBackend is the backend name given to [New] (e.g. "memory",
	// "redis", "redlock"; see ctxlock.BackendNamer). It is on every span and every metric.
	AttrBackend = attribute.Key("ctxlock.backend")
	// AttrOperation is "lock" or "try_lock" on acquire metrics, "refresh" or
	// "release" on batch spans and metrics.
	AttrOperation = attribute.Key("ctxlock.operation")
	// AttrOutcome is one of the Outcome* values.
	AttrOutcome = attribute.Key("ctxlock.outcome")
	// AttrAttempts is the number of attempts an acquire call made (int):
	// backend attempts, or 1 for a TryLock refused at once because another
	// goroutine holds the same Lock value (no backend call).
	AttrAttempts = attribute.Key("ctxlock.attempts")
	// AttrContended reports whether an acquire call found the key held at
	// least once (bool).
	AttrContended = attribute.Key("ctxlock.contended")
	// AttrWaitTime is the time, in seconds, an acquire call waited because the
	// key was held (double); 0 when it never found the key held, and always
	// 0 for TryLock, which does not wait.
	AttrWaitTime = attribute.Key("ctxlock.wait_time")
	// AttrFencingToken is the fencing token of the hold an acquire call
	// obtained (int); present only when acquired.
	AttrFencingToken = attribute.Key("ctxlock.fencing_token")
	// AttrHoldEndReason is one of the Reason* values.
	AttrHoldEndReason = attribute.Key("ctxlock.hold.end_reason")
	// AttrHoldTime is how long a hold lasted, in seconds (double), on the
	// hold span.
	AttrHoldTime = attribute.Key("ctxlock.hold_time")
	// AttrBatchSize is the number of leases in a batch (int).
	AttrBatchSize = attribute.Key("ctxlock.batch.size")
	// AttrBatchFailed is the number of leases of a batch that failed (int).
	AttrBatchFailed = attribute.Key("ctxlock.batch.failed")
	// AttrErrorType is the semantic-convention error.type attribute, set on
	// failed spans and on the duration metrics of failed calls. Its value is
	// computed by [ErrorType].
	AttrErrorType = attribute.Key("error.type")
)

// Values of AttrOperation on acquire metrics.
const (
	OpLock    = "lock"
	OpTryLock = "try_lock"
)

// Explicit bucket boundaries, in seconds, advised for the latency histograms
// (acquire, wait, batch): 0.5 ms to 60 s. A View in the SDK overrides them.
var latencyBuckets = []float64{
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
	1, 2.5, 5, 10, 30, 60,
}

// Bucket boundaries, in seconds, for hold durations: holds range from a few
// milliseconds (a critical section) to hours (a leader).
var holdBuckets = []float64{
	0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60,
	300, 900, 1800, 3600, 14400, 86400,
}

// Bucket boundaries for the number of leases per refresh batch.
var batchSizeBuckets = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000}

// LatencyBuckets returns the histogram bucket boundaries, in seconds, that this
// package advises for ctxlock.acquire.duration, ctxlock.wait.duration and
// ctxlock.batch.duration.
func LatencyBuckets() []float64 { return append([]float64(nil), latencyBuckets...) }

// HoldBuckets returns the bucket boundaries, in seconds, advised for
// ctxlock.hold.duration.
func HoldBuckets() []float64 { return append([]float64(nil), holdBuckets...) }

// BatchSizeBuckets returns the bucket boundaries advised for
// ctxlock.refresh.batch.size.
func BatchSizeBuckets() []float64 { return append([]float64(nil), batchSizeBuckets...) }
