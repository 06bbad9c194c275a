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
