package ctxlock

import (
	"fmt"
	"log/slog"
	"math"
	"reflect"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Defaults of LockOptions. Their names are those of the lock API ctxlock's
// design started from, and, as there, they are variables, so code ported
// from it keeps compiling. A program may change them, before it makes any
// Lock (they are read, without synchronization, by DefaultLockOptions and
// by every Lock made without the matching option); tests should rather
// pass options, or WithDefaultLockOptions to a Manager.
var (
	// DefaultTimeout is the default lease TTL (WithTTL): how long the backend
	// keeps a lock whose holder stops refreshing it (for instance because the
	// process died). It is not a timeout on waiting: ctx bounds that.
	DefaultTimeout = 10 * time.Second
	// DefaultRetryDelay is the first delay between acquire attempts while a
	// lock is held elsewhere; later delays double up to MaxRetryDelay (or the
	// retry delay, if that is longer), and each is jittered into [d/2, d].
	DefaultRetryDelay = 10 * time.Millisecond
	// DefaultAcquireTimeout bounds one acquire attempt against the backend.
	DefaultAcquireTimeout = 100 * time.Millisecond
)

// The Manager's own delays, which the Default variables, changeable,
// must not move.
const (
	// releaseRetryDelay is the first delay between retries of a release.
	releaseRetryDelay = 10 * time.Millisecond
	// afterCloseReleaseTimeout bounds a release sent after Close stopped
	// waiting.
	afterCloseReleaseTimeout = 100 * time.Millisecond
)

// Other defaults and limits.
const (
	// DefaultDriftFactor is the share of the TTL subtracted from every validity
	// window to allow for clock drift between this process and the backend.
	DefaultDriftFactor = 0.01
	// MaxRetryDelay caps the growth of the retry backoff (a longer
	// WithRetryDelay is not cut down to it, except that a waiter queued by a
	// WaiterQueue backend retries every MaxRetryDelay to keep its place). A
	// waiter also never sleeps past the holder's remaining TTL, nor past a
	// release notification.
	MaxRetryDelay = time.Second
	// MaxKeyLength is the longest key, in bytes, that NewLock accepts (before
	// the Manager's namespace is prepended).
	MaxKeyLength = 1024
	// MaxMetadataLength is the longest WithMetadata text, in bytes.
	MaxMetadataLength = 4096
)

// validityMargin is the fixed part of the drift allowance (§3 of the design).
const validityMargin = 2 * time.Millisecond

// LockOptions are the settings of one Lock. Build them with DefaultLockOptions
// and Apply; the zero value is not valid (its TTL is 0).
type LockOptions struct {
	// TTL is the lease duration on the backend. Default DefaultTimeout.
	TTL time.Duration
	// RetryDelay is the first backoff delay while waiting. Default DefaultRetryDelay.
	RetryDelay time.Duration
	// AcquireTimeout bounds one backend acquire attempt. Default DefaultAcquireTimeout.
	AcquireTimeout time.Duration
	// RefreshInterval is how often a held lease is extended; 0 means the
	// default, derived from the TTL when used: TTL/3, or half the validity
	// window if that is shorter (TTLs under three drift allowances, a few
	// milliseconds).
	RefreshInterval time.Duration
	// NoRefresh disables refreshing: the hold simply lapses after its validity window.
	NoRefresh bool
	// DriftFactor is the share of the TTL reserved for clock drift. Default 0.01.
	DriftFactor float64
	// Tracer, when set, is used for this lock's spans instead of the
	// Manager's (see WithTracer).
	Tracer trace.Tracer
	// Metadata is opaque owner text stored with the lease, visible to operators.
	Metadata string
}

// LockOption configures a Lock. Options are applied in order; a later one wins.
type LockOption func(*LockOptions)

// DefaultLockOptions returns the defaults: TTL DefaultTimeout, retry delay
// DefaultRetryDelay, acquire timeout DefaultAcquireTimeout, drift factor
// DefaultDriftFactor, and RefreshInterval 0: refresh every TTL/3 of
// whatever TTL the options end up with.
func DefaultLockOptions() *LockOptions {
	return &LockOptions{
		TTL:            DefaultTimeout,
		RetryDelay:     DefaultRetryDelay,
		AcquireTimeout: DefaultAcquireTimeout,
		DriftFactor:    DefaultDriftFactor,
	}
}

// Apply applies opts to o in order. Nil options are ignored.
func (o *LockOptions) Apply(opts ...LockOption) {
	for _, opt := range opts {
		if opt != nil {
			opt(o)
		}
	}
}

// WithTTL sets the lease TTL. It must be positive, at most a year, and longer
// than the drift allowance (TTL × drift factor + 2ms).
func WithTTL(ttl time.Duration) LockOption { return func(o *LockOptions) { o.TTL = ttl } }

// WithRetryDelay sets the first delay between acquire attempts while
// waiting, and between retries of a refresh that failed with a transient
// error (doubled per failure up to 1,024 delays, at least MaxRetryDelay, and
// at most half the refresh interval). It must be positive.
func WithRetryDelay(d time.Duration) LockOption { return func(o *LockOptions) { o.RetryDelay = d } }

// WithAcquireTimeout bounds each backend acquire attempt. It must be positive.
func WithAcquireTimeout(d time.Duration) LockOption {
	return func(o *LockOptions) { o.AcquireTimeout = d }
}

// WithRefreshInterval sets how often the scheduler extends a held lease. It
// must be shorter than the validity window (TTL minus drift allowance); 0
// restores the default (TTL/3, see LockOptions.RefreshInterval). It also
// turns refreshing back on after WithoutRefresh.
func WithRefreshInterval(d time.Duration) LockOption {
	return func(o *LockOptions) { o.RefreshInterval = d; o.NoRefresh = false }
}

// WithoutRefresh disables refreshing: the hold ends with ErrExpired at its
// validity deadline and the lease lapses on the backend at its TTL.
func WithoutRefresh() LockOption { return func(o *LockOptions) { o.NoRefresh = true } }

// WithDriftFactor sets the share of the TTL reserved for clock drift, in [0, 0.5).
// A hold's local validity window is TTL − (TTL×f + 2ms). The allowance is
// also all that absorbs this process running late: a hold ends when the
// Manager's scheduler goroutine gets to run, so a process starved of CPU
// (or paused) past the allowance ends its hold after the lease may have
// lapsed. With the default, a 5ms TTL leaves 2.05ms; for TTLs under a
// second on a loaded machine, raise f (0.4 of 50ms is 22ms).
func WithDriftFactor(f float64) LockOption { return func(o *LockOptions) { o.DriftFactor = f } }

// WithTracer sets the tracer for this lock's spans (ctxlock.acquire,
// ctxlock.try_acquire and ctxlock.hold), overriding the Manager's tracer
// provider; refresh and release batch spans, which serve many locks, use the
// Manager's. A nil tracer keeps the Manager's.
func WithTracer(t trace.Tracer) LockOption { return func(o *LockOptions) { o.Tracer = t } }

// WithMetadata stores opaque owner text with each lease (for operators: who holds it).
func WithMetadata(text string) LockOption { return func(o *LockOptions) { o.Metadata = text } }

// refreshInterval returns the effective refresh interval.
func (o *LockOptions) refreshInterval() time.Duration {
	if o.RefreshInterval > 0 {
		return o.RefreshInterval
	}
	return min(o.TTL/3, (o.TTL-o.driftAllowance())/2)
}

// driftAllowance is d*drift + 2ms: how much shorter than the TTL the local
// validity window is.
func (o *LockOptions) driftAllowance() time.Duration {
	return time.Duration(float64(o.TTL)*o.DriftFactor) + validityMargin
}

// Validate reports the first setting that cannot work, wrapped in ErrInvalidOption.
func (o *LockOptions) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidOption}, args...)...)
	}
	switch {
	case o.TTL <= 0:
		return bad("TTL %v must be positive", o.TTL)
	case o.TTL > 365*24*time.Hour:
		return bad("TTL %v is longer than a year", o.TTL)
	case math.IsNaN(o.DriftFactor) || o.DriftFactor < 0 || o.DriftFactor >= 0.5:
		return bad("drift factor %v must be in [0, 0.5)", o.DriftFactor)
	case o.TTL <= o.driftAllowance():
		return bad("TTL %v must exceed the drift allowance %v", o.TTL, o.driftAllowance())
	case o.RetryDelay <= 0:
		return bad("retry delay %v must be positive", o.RetryDelay)
	case o.AcquireTimeout <= 0:
		return bad("acquire timeout %v must be positive", o.AcquireTimeout)
	case o.RefreshInterval < 0:
		return bad("refresh interval %v must not be negative", o.RefreshInterval)
	case len(o.Metadata) > MaxMetadataLength:
		return bad("metadata of %d bytes exceeds %d", len(o.Metadata), MaxMetadataLength)
	}
	if !o.NoRefresh {
		if ri := o.refreshInterval(); ri <= 0 || ri >= o.TTL-o.driftAllowance() {
			return bad("refresh interval %v must be positive and shorter than the validity window %v (TTL %v)",
				ri, o.TTL-o.driftAllowance(), o.TTL)
		}
	}
	return nil
}

// ManagerOption configures a Manager.
type ManagerOption func(*managerOptions)

type managerOptions struct {
	namespace      string
	logger         *slog.Logger
	tracerProvider trace.TracerProvider
	meterProvider  metric.MeterProvider
	lockDefaults   []LockOption
	workers        int
}

// WithNamespace prefixes every key of the Manager's locks with ns, so that
// several applications can share one backend without colliding. The prefix
// is prepended as is: end it with a separator ("billing:"), or namespace
// "a" with key "bc" is the same lock as namespace "ab" with key "c".
func WithNamespace(ns string) ManagerOption { return func(o *managerOptions) { o.namespace = ns } }

// WithLogger sets the logger for background events: a Warn for each hold
// that ends other than by Unlock (lost, expired, or ended by Close) and for
// each release given up. Nil, the default, discards them.
func WithLogger(l *slog.Logger) ManagerOption { return func(o *managerOptions) { o.logger = l } }

// WithTracerProvider sets the OpenTelemetry tracer provider. Without it the
// Manager uses the global provider (otel.GetTracerProvider) at the time of
// each span. A nil provider is ignored, as in the contrib instrumentation
// libraries.
func WithTracerProvider(tp trace.TracerProvider) ManagerOption {
	return func(o *managerOptions) {
		if !isNilProvider(tp) {
			o.tracerProvider = tp
		}
	}
}

// WithMeterProvider sets the OpenTelemetry meter provider. Without it the
// Manager uses the global provider (otel.GetMeterProvider). A nil provider
// is ignored.
func WithMeterProvider(mp metric.MeterProvider) ManagerOption {
	return func(o *managerOptions) {
		if !isNilProvider(mp) {
			o.meterProvider = mp
		}
	}
}

// isNilProvider reports whether p is nil or a typed nil pointer (a provider
// variable left unset), which the provider options ignore.
func isNilProvider(p any) bool {
	if p == nil {
		return true
	}
	v := reflect.ValueOf(p)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

// WithDefaultLockOptions sets options applied to every Lock of the Manager
// before the options given to NewLock.
func WithDefaultLockOptions(opts ...LockOption) ManagerOption {
	return func(o *managerOptions) { o.lockDefaults = append(o.lockDefaults, opts...) }
}

// WithWorkers bounds how many backend calls (refresh and release batches) the
// scheduler runs at once. Default 8; values below 1 select the default.
func WithWorkers(n int) ManagerOption { return func(o *managerOptions) { o.workers = n } }
