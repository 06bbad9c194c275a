package locktest

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/ctxlock/ctxlock"
)

// ErrOutage is what an Outage's calls fail with while it is down. It matches
// ctxlock.ErrUnavailable.
var ErrOutage = ctxlock.Unavailable(errors.New("locktest: simulated outage"))

// Outage wraps a Backend with an outage switch: while down, Acquire, Extend,
// Release and Health fail with ErrOutage, as they would against a server
// that cannot be reached. It implements Faulty, so the suite's outage cases
// run on networked backends. Wrappers that also forward a backend's optional
// interfaces (ctxlock.Relocker, …) should check Down in them too.
type Outage struct {
	ctxlock.Backend
	down atomic.Bool
}

// NewOutage wraps b, up.
func NewOutage(b ctxlock.Backend) *Outage { return &Outage{Backend: b} }

// SetUnavailable turns the outage on (true) or off.
func (o *Outage) SetUnavailable(down bool) { o.down.Store(down) }

// Down reports whether the outage is on.
func (o *Outage) Down() bool { return o.down.Load() }

// Acquire implements ctxlock.Backend.
func (o *Outage) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	if o.Down() {
		return ctxlock.Lease{}, ErrOutage
	}
	return o.Backend.Acquire(ctx, req)
}

// Extend implements ctxlock.Backend.
func (o *Outage) Extend(ctx context.Context, leases []ctxlock.Lease, ttl time.Duration) []error {
	if o.Down() {
		return Failed(len(leases))
	}
	return o.Backend.Extend(ctx, leases, ttl)
}

// Release implements ctxlock.Backend.
func (o *Outage) Release(ctx context.Context, leases []ctxlock.Lease) []error {
	if o.Down() {
		return Failed(len(leases))
	}
	return o.Backend.Release(ctx, leases)
}

// Health implements ctxlock.Backend.
func (o *Outage) Health(ctx context.Context) ([]string, error) {
	if o.Down() {
		return []string{"simulated outage"}, ErrOutage
	}
	return o.Backend.Health(ctx)
}

// Failed returns n ErrOutage results, for a batch call during an outage.
func Failed(n int) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = ErrOutage
	}
	return errs
}

// RelockingBackend is a Backend with the optional interfaces Relocker and
// ContentionReporter, as the networked backends have.
type RelockingBackend interface {
	ctxlock.Backend
	ctxlock.Relocker
	ctxlock.ContentionReporter
}

// RelockingOutage is an Outage over a RelockingBackend that forwards Relock
// and ReleaseContended too, behind the same switch, so that an outage also
// reaches the Manager's re-lock and contention paths.
type RelockingOutage struct {
	*Outage
	b RelockingBackend
}

// NewRelockingOutage wraps b, up.
func NewRelockingOutage(b RelockingBackend) *RelockingOutage {
	return &RelockingOutage{Outage: NewOutage(b), b: b}
}

// ReleaseContended implements ctxlock.ContentionReporter.
func (o *RelockingOutage) ReleaseContended(ctx context.Context, leases []ctxlock.Lease) ([]error, []bool) {
	if o.Down() {
		return Failed(len(leases)), nil
	}
	return o.b.ReleaseContended(ctx, leases)
}

// Relock implements ctxlock.Relocker.
func (o *RelockingOutage) Relock(ctx context.Context, old ctxlock.Lease, req ctxlock.AcquireRequest) (lease ctxlock.Lease, wanted, queued bool, err error) {
	if o.Down() {
		return ctxlock.Lease{}, false, false, ErrOutage
	}
	return o.b.Relock(ctx, old, req)
}
