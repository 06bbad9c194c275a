package etcd_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/etcd"
	"github.com/ctxlock/ctxlock/backends/locktest"
)

// conformanceTTL is the lease TTL of the real-time conformance run: etcd
// leases count whole seconds.
const conformanceTTL = time.Second

// TestConformance runs the locktest suite against a real server. Every leaf
// test gets its own Backend (its own watch) on one client, as processes
// sharing a cluster would; locktest gives each leaf its own keys.
func TestConformance(t *testing.T) {
	_, client := start(t)
	locktest.Run(t, func(t *testing.T) ctxlock.Backend {
		b := newBackend(t, client)
		return &faultyBackend{Outage: locktest.NewOutage(b), b: b, client: client}
	}, locktest.WithTTL(conformanceTTL))
}

// faultyBackend adds the locktest fault switches to a real Backend: an
// outage switch and Evict (the key is deleted, as data loss would; the
// revision, where tokens come from, goes on).
type faultyBackend struct {
	*locktest.Outage
	b      *etcd.Backend
	client *clientv3.Client
}

// Evict deletes key's etcd key.
func (f *faultyBackend) Evict(key string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = f.client.Delete(ctx, f.b.LockKey(key))
}
