package goredis_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/backends/locktest"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// conformanceTTL is the lease TTL of the real-time conformance runs.
const conformanceTTL = 500 * time.Millisecond

func TestConformanceStandalone(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	locktest.Run(t, func(t *testing.T) ctxlock.Backend { return faulty(t, c) }, locktest.WithTTL(conformanceTTL))
}

func TestConformanceCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	c := cl.Client(t)
	locktest.Run(t, func(t *testing.T) ctxlock.Backend { return faulty(t, c) }, locktest.WithTTL(conformanceTTL))
}

// faultyBackend adds the locktest fault switches to a real Backend: an
// outage switch (every call fails with ErrUnavailable, as a dead server
// would) and Evict (DEL of the lock key, as on data loss).
type faultyBackend struct {
	*goredis.Backend
	client redis.UniversalClient
	down   atomic.Bool
}

func faulty(t *testing.T, c redis.UniversalClient) *faultyBackend {
	// Each leaf test gets a new Backend (its own subscription); locktest
	// gives every leaf test its own keys.
	return &faultyBackend{Backend: newBackend(t, c), client: c}
}

var errOutage = ctxlock.Unavailable(errOutageCause{})

type errOutageCause struct{}

func (errOutageCause) Error() string { return "simulated outage" }

func (f *faultyBackend) SetUnavailable(down bool) { f.down.Store(down) }

func (f *faultyBackend) Evict(key string) {
	lk, _, _ := f.Keys(key)
	_ = f.client.Del(context.Background(), lk).Err()
}

func (f *faultyBackend) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	if f.down.Load() {
		return ctxlock.Lease{}, errOutage
	}
	return f.Backend.Acquire(ctx, req)
}

func (f *faultyBackend) Extend(ctx context.Context, leases []ctxlock.Lease, ttl time.Duration) []error {
	if f.down.Load() {
		return outage(len(leases))
	}
	return f.Backend.Extend(ctx, leases, ttl)
}

func (f *faultyBackend) Release(ctx context.Context, leases []ctxlock.Lease) []error {
	if f.down.Load() {
		return outage(len(leases))
	}
	return f.Backend.Release(ctx, leases)
}

func (f *faultyBackend) Health(ctx context.Context) ([]string, error) {
	if f.down.Load() {
		return []string{"simulated outage"}, errOutage
	}
	return f.Backend.Health(ctx)
}

func outage(n int) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = errOutage
	}
	return errs
}
