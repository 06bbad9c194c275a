// Package ctxlockotel is the OpenTelemetry instrumentation of ctxlock.
//
// SKELETON: signatures are the contract with the root package; bodies to be implemented.
package ctxlockotel

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope name: this package's import path.
const ScopeName = "github.com/ctxlock/ctxlock/otel"

// Version is the instrumentation version.
const Version = "0.1.0"

// Outcome of an acquire call.
const (
	OutcomeAcquired = "acquired" // the lock was taken
	OutcomeHeld     = "held"     // TryLock found it held elsewhere (not an error)
	OutcomeCanceled = "canceled" // ctx ended while waiting
	OutcomeClosed   = "closed"   // the manager closed
	OutcomeError    = "error"    // a permanent error or invalid input
)

// Reasons a hold ended.
const (
	ReasonUnlocked = "unlocked"
	ReasonLost     = "lost"
	ReasonExpired  = "expired"
	ReasonClosed   = "closed"
)

// Instrumentation records spans and metrics for one Manager.
type Instrumentation struct{}

// New returns instrumentation for a Manager whose backend is named backend.
// Nil providers mean the otel globals.
func New(tp trace.TracerProvider, mp metric.MeterProvider, backend string) *Instrumentation {
	return &Instrumentation{}
}

// Acquire records one Lock or TryLock call.
type Acquire struct{}

// StartAcquire starts recording a Lock (try=false) or TryLock (try=true) call on key.
// tracer overrides the provider's tracer when non-nil (WithTracer).
func (i *Instrumentation) StartAcquire(ctx context.Context, tracer trace.Tracer, try bool, key string) (context.Context, Acquire) {
	return ctx, Acquire{}
}

// Attempt records one backend attempt; held reports that the key was found held.
func (a *Acquire) Attempt(held bool) {}

// End ends the call with an outcome (Outcome*), the fencing token when acquired, and the error returned.
// It returns the span context of the acquire span (for linking the hold's later events).
func (a *Acquire) End(outcome string, token uint64, err error) trace.SpanContext {
	return trace.SpanContext{}
}

// HoldEnded records the end of a hold on key that lasted held, for reason (Reason*),
// with the error that ended it (nil for unlocked). acquired is the acquire span's context.
func (i *Instrumentation) HoldEnded(acquired trace.SpanContext, key string, held time.Duration, reason string, err error) {
}

// Batch records one refresh or release batch.
type Batch struct{}

// Batch operations.
const (
	OpRefresh = "refresh"
	OpRelease = "release"
)

// StartBatch starts recording a backend batch of n leases for op (OpRefresh or OpRelease).
func (i *Instrumentation) StartBatch(ctx context.Context, op string, n int) (context.Context, Batch) {
	return ctx, Batch{}
}

// End ends the batch: failed leases out of n, err the first failure.
func (b *Batch) End(failed int, err error) {}

// PendingReleases adds delta to the number of releases waiting for backend confirmation.
func (i *Instrumentation) PendingReleases(delta int) {}
