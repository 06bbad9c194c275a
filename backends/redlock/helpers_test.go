package redlock_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/redlock"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// cluster is N independent test servers and a client for each.
type cluster struct {
	servers []*redistest.Server
	clients []redis.UniversalClient
}

func startNodes(t *testing.T, n int) *cluster {
	t.Helper()
	c := &cluster{servers: redistest.StartNodes(t, n)}
	for _, s := range c.servers {
		c.clients = append(c.clients, s.Client(t))
	}
	return c
}

func newBackend(t testing.TB, clients []redis.UniversalClient, opts ...redlock.Option) *redlock.Backend {
	t.Helper()
	b, err := redlock.New(clients, opts...)
	if err != nil {
		t.Fatalf("redlock.New: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func owner() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func uniqueKey(name string) string { return "redlocktest/" + owner() + "/" + name }

// faultyBackend adds the locktest fault switches to a redlock Backend: an
// outage switch (every call fails with ErrUnavailable, as if every node
// were down) and Evict (DEL of the lease on every node, as on data loss).
type faultyBackend struct {
	*redlock.Backend
	clients []redis.UniversalClient
	down    atomic.Bool
}

var errOutage = ctxlock.Unavailable(errOutageCause{})

type errOutageCause struct{}

func (errOutageCause) Error() string { return "simulated outage of every node" }

func (f *faultyBackend) SetUnavailable(down bool) { f.down.Store(down) }

func (f *faultyBackend) Evict(key string) {
	lk, _, _ := f.Keys(key)
	for _, c := range f.clients {
		_ = c.Del(context.Background(), lk).Err()
	}
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
