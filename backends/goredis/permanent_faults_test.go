package goredis_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// Use of a closed go-redis client is permanent (isTransient): a Lock on a
// Backend whose client the application closed fails at once with that
// error, rather than retrying it as a transport fault until its context
// ends, and TryLock says so too.
func TestClosedClientFailsLockAtOnce(t *testing.T) {
	s := redistest.StartServer(t)
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	b := newBackend(t, c)
	m := ctxlock.NewManager(b)
	defer m.Close(context.Background())
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l := m.NewLock("k")
	start := time.Now()
	_, err := l.Lock(ctx)
	if !errors.Is(err, redis.ErrClosed) || errors.Is(err, ctxlock.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Lock on a closed client: %v; want redis.ErrClosed, not ErrUnavailable", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Lock on a closed client returned after %v; want at once", d)
	}
	if ok, _, err := l.TryLock(ctx); ok || !errors.Is(err, redis.ErrClosed) || errors.Is(err, ctxlock.ErrUnavailable) {
		t.Errorf("TryLock on a closed client: %v, %v; want redis.ErrClosed, not ErrUnavailable", ok, err)
	}
}

// In Cluster mode Health reports a cluster whose state is not ok (a slot
// served by no master) as unusable, even though every master answers PING:
// its condition names cluster_state and err matches ErrUnavailable.
func TestClusterHealthReportsClusterStateFail(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	c := cl.Client(t)
	b := newBackend(t, c)
	ctx := context.Background()
	if conds, err := b.Health(ctx); err != nil {
		t.Fatalf("Health of a healthy cluster: %q, %v", conds, err)
	}
	slot := redis.NewClient(&redis.Options{Addr: cl.Node(0).Addr()})
	defer slot.Close()
	keySlot, err := slot.ClusterKeySlot(ctx, "{k}").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range cl.Nodes() { // no node thinks any master serves it
		nc := redis.NewClient(&redis.Options{Addr: n.Addr()})
		err := nc.ClusterDelSlots(ctx, int(keySlot)).Err()
		nc.Close()
		if err != nil {
			t.Fatalf("CLUSTER DELSLOTS on %s: %v", n.Addr(), err)
		}
	}
	conds, err := b.Health(ctx)
	if !errors.Is(err, ctxlock.ErrUnavailable) || !slices.ContainsFunc(conds, func(c string) bool { return strings.Contains(c, "cluster_state:fail") }) {
		t.Errorf("Health with an unserved slot: %q, %v; want cluster_state:fail and ErrUnavailable", conds, err)
	}
	if slices.ContainsFunc(conds, func(c string) bool { return strings.Contains(c, "unreachable") }) {
		t.Errorf("Health reports a master unreachable: %q", conds)
	}
}

// ownerOn returns the owner stored for key's lease on the server, "" if none.
func ownerOn(t *testing.T, c redis.UniversalClient, b interface {
	Keys(string) (string, string, string)
}, key string) string {
	t.Helper()
	lk, _, _ := b.Keys(key)
	v, err := c.Get(context.Background(), lk).Result()
	if errors.Is(err, redis.Nil) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Relock checks both leases before it sends anything: a bad new request
// fails with no I/O, and the old lease stays held. Leases of different keys
// fall back to a release of the old one and an acquire of the new one.
func TestRelockValidatesFirstAndCrossKeyFallback(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	b := newBackend(t, c)
	ctx := context.Background()
	old := acquire(t, b, "a", time.Minute)
	for name, req := range map[string]ctxlock.AcquireRequest{
		"empty owner":    {Key: "a", TTL: time.Minute, Timeout: time.Second},
		"owner with NUL": {Key: "a", Owner: "x\x00y", TTL: time.Minute, Timeout: time.Second},
	} {
		if _, _, _, err := b.Relock(ctx, old, req); err == nil || errors.Is(err, ctxlock.ErrUnavailable) {
			t.Errorf("Relock with %s: %v; want a permanent error", name, err)
		}
		if got := ownerOn(t, c, b, "a"); got != old.Owner {
			t.Errorf("after Relock with %s the key is held by %q; want the old lease %q kept", name, got, old.Owner)
		}
	}

	req := ctxlock.AcquireRequest{Key: "b", Owner: owner(), TTL: time.Minute, Timeout: time.Second}
	lease, wanted, queued, err := b.Relock(ctx, old, req)
	if err != nil || wanted || queued || lease.Key != "b" || lease.Owner != req.Owner || lease.Token == 0 {
		t.Fatalf("cross-key Relock = (%+v, %v, %v, %v); want a lease of b", lease, wanted, queued, err)
	}
	if got := ownerOn(t, c, b, "a"); got != "" {
		t.Errorf("old key a still held by %q after a cross-key Relock", got)
	}
	if got := ownerOn(t, c, b, "b"); got != req.Owner {
		t.Errorf("key b held by %q; want %q", got, req.Owner)
	}
}

// A release batch with one bad lease fails that lease alone: the others
// in the batch are released.
func TestReleaseContendedBatchWithBadLease(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	b := newBackend(t, c)
	good := acquire(t, b, "good", time.Minute)
	errs, _ := b.ReleaseContended(context.Background(), []ctxlock.Lease{{Key: "", Owner: "o"}, good})
	if len(errs) != 2 || !errors.Is(errs[0], ctxlock.ErrInvalidKey) || errs[1] != nil {
		t.Fatalf("ReleaseContended([bad, good]) = %v; want [ErrInvalidKey, nil]", errs)
	}
	if got := ownerOn(t, c, b, "good"); got != "" {
		t.Errorf("good lease still held by %q after the batch", got)
	}
	if errs, contended := b.ReleaseContended(context.Background(), nil); errs != nil || contended != nil {
		t.Errorf("ReleaseContended(nil) = %v, %v; want nil, nil", errs, contended)
	}
}
