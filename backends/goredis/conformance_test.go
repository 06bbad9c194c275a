package goredis_test

import (
	"context"
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

// TestConformanceClockTokens runs the suite with fencing tokens from the
// server's clock (WithClockTokens).
func TestConformanceClockTokens(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	locktest.Run(t, func(t *testing.T) ctxlock.Backend {
		return faulty(t, c, goredis.WithClockTokens(time.Hour))
	}, locktest.WithTTL(conformanceTTL))
}

func TestConformanceCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	c := cl.Client(t)
	locktest.Run(t, func(t *testing.T) ctxlock.Backend { return faulty(t, c) }, locktest.WithTTL(conformanceTTL))
}

// faultyBackend adds the locktest fault switches to a real Backend: an
// outage switch (locktest.RelockingOutage: every call fails with ErrUnavailable, as a
// dead server would, the optional interfaces included) and Evict (DEL of the
// lock key, as on data loss).
type faultyBackend struct {
	*locktest.RelockingOutage
	rb     *goredis.Backend
	client redis.UniversalClient
}

func faulty(t *testing.T, c redis.UniversalClient, opts ...goredis.Option) *faultyBackend {
	// Each leaf test gets a new Backend (its own subscription); locktest
	// gives every leaf test its own keys.
	b := newBackend(t, c, opts...)
	return &faultyBackend{RelockingOutage: locktest.NewRelockingOutage(b), rb: b, client: c}
}

func (f *faultyBackend) Evict(key string) {
	lk, _, _ := f.rb.Keys(key)
	_ = f.client.Del(context.Background(), lk).Err()
}

// The waiter queue, behind the same switch.

func (f *faultyBackend) WatchWaiter(key, waiter string) (<-chan ctxlock.Handoff, func()) {
	return f.rb.WatchWaiter(key, waiter)
}

func (f *faultyBackend) Leave(ctx context.Context, key, waiter string) error {
	if f.Down() {
		return locktest.ErrOutage
	}
	return f.rb.Leave(ctx, key, waiter)
}
