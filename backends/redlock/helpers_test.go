package redlock_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
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
// outage switch (locktest.RelockingOutage: every call fails with ErrUnavailable, as if
// every node were down, the optional interfaces included) and Evict (DEL of
// the lease on every node, as on data loss).
type faultyBackend struct {
	*locktest.RelockingOutage
	rb      *redlock.Backend
	clients []redis.UniversalClient
}

func (f *faultyBackend) Evict(key string) {
	lk, _, _ := f.rb.Keys(key)
	for _, c := range f.clients {
		_ = c.Del(context.Background(), lk).Err()
	}
}

// settled runs f with a Backend of its own over clients and closes it
// afterwards, which waits for the calls still finishing on the nodes that
// answered after the quorum: the nodes are then in their final state.
func settled(t *testing.T, clients []redis.UniversalClient, f func(b *redlock.Backend)) {
	t.Helper()
	settledWith(t, clients, nil, f)
}

// settledWith is settled with options for the Backend.
func settledWith(t *testing.T, clients []redis.UniversalClient, opts []redlock.Option, f func(b *redlock.Backend)) {
	t.Helper()
	b := newBackend(t, clients, opts...)
	f(b)
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func lockReq(key string) ctxlock.AcquireRequest {
	// A Waiter, as the Manager's Lock sends: refusing nodes queue it, and
	// only hint it (no node grants on its own).
	return ctxlock.AcquireRequest{Key: key, Owner: owner(), TTL: 10 * time.Second, Timeout: time.Second, Waiter: owner()}
}

// holders returns the owner of key's lease on every node ("" where none).
func holders(t *testing.T, c *cluster, b *redlock.Backend, key string) []string {
	t.Helper()
	lk, _, _ := b.Keys(key)
	out := make([]string, len(c.clients))
	for i, cl := range c.clients {
		v, err := cl.Get(context.Background(), lk).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			continue // a dead node
		}
		out[i] = v
	}
	return out
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}
