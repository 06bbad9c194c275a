package redlock_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock/backends/locktest"
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
// outage switch (locktest.Outage: every call fails with ErrUnavailable, as if
// every node were down) and Evict (DEL of the lease on every node, as on data
// loss).
type faultyBackend struct {
	*locktest.Outage
	rb      *redlock.Backend
	clients []redis.UniversalClient
}

func (f *faultyBackend) Evict(key string) {
	lk, _, _ := f.rb.Keys(key)
	for _, c := range f.clients {
		_ = c.Del(context.Background(), lk).Err()
	}
}
