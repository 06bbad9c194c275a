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
