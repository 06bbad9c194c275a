package goredis_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

func TestCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	c := cl.Client(t)
	var mu sync.Mutex
	perNode := map[string]*pipelineCounter{}
	c.OnNewNode(func(node *redis.Client) {
		pc := &pipelineCounter{}
		node.AddHook(pc)
		mu.Lock()
		perNode[node.Options().Addr] = pc
		mu.Unlock()
	})
	b := newBackend(t, c)
	waiter := newBackend(t, cl.Client(t))
	ctx := context.Background()

	// Leases spread over every node.
	leases := acquireMany(t, b, 300, 10*time.Second)
	for i := 1; i < len(leases); i++ {
		if leases[i].Token == 0 {
			t.Fatalf("lease %d has no token", i)
		}
	}
	_, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: leases[7].Key, Owner: owner(), TTL: time.Second, Timeout: time.Second})
	if !errors.Is(err, ctxlock.ErrHeld) {
		t.Fatalf("Acquire of a held key: %v", err)
	}
	if errs := b.Extend(ctx, leases, 10*time.Second); errors.Join(errs...) != nil { // warm the script caches
		t.Fatal(errs)
	}
	mu.Lock()
	for _, pc := range perNode {
		pc.reset()
	}
	mu.Unlock()
	if errs := b.Extend(ctx, leases, 20*time.Second); errors.Join(errs...) != nil {
		t.Fatalf("Extend: %v", errs)
	}
	mu.Lock()
	var nodes int
	var total int64
	for addr, pc := range perNode {
		if p := pc.pipelines.Load(); p > 1 {
			t.Errorf("node %s: %d pipelines for one batch", addr, p)
		} else if p == 1 {
			nodes++
		}
		total += pc.cmds.Load()
	}
	mu.Unlock()
	if nodes != 3 || total != int64(len(leases)) {
		t.Fatalf("Extend touched %d nodes with %d commands; want 3 nodes, %d commands", nodes, total, len(leases))
	}

	// A release on one node wakes a watcher of another Backend, whatever the slot.
	for _, l := range leases[:10] {
		ch, stop := waiter.Watch(l.Key)
		if errs := b.Release(ctx, []ctxlock.Lease{l}); errors.Join(errs...) != nil {
			t.Fatal(errs)
		}
		received(t, ch, "release of "+l.Key)
		stop()
	}
	if errs := b.Release(ctx, leases[10:]); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	if conds, err := b.Health(ctx); err != nil || len(conds) != 0 {
		t.Fatalf("Health: %v, %v", conds, err)
	}
}

func TestClusterNodeDown(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	c := cl.Client(t)
	b := newBackend(t, c, goredis.WithHealthCheckInterval(200*time.Millisecond))
	ctx := context.Background()
	leases := acquireMany(t, b, 30, 10*time.Second)

	cl.Node(1).Kill()
	hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	conds, err := b.Health(hctx)
	cancel()
	if !errors.Is(err, ctxlock.ErrUnavailable) || len(conds) == 0 {
		t.Fatalf("Health with a master down: %v, %v", conds, err)
	}
	errs := b.Extend(ctx, leases, 10*time.Second)
	var unavailable, ok int
	for i := range leases {
		switch {
		case errs == nil || errs[i] == nil:
			ok++
		case errors.Is(errs[i], ctxlock.ErrUnavailable):
			unavailable++
		default:
			t.Fatalf("Extend of %q: %v (want nil or ErrUnavailable)", leases[i].Key, errs[i])
		}
	}
	if unavailable == 0 || ok == 0 {
		t.Fatalf("with one of 3 masters down: %d ok, %d unavailable", ok, unavailable)
	}

	cl.Node(1).Restart()
	cl.WaitReady(t)
	deadline := time.Now().Add(waitLong)
	for i := 0; ; i++ {
		_, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: fmt.Sprintf("after-%d", i), Owner: owner(), TTL: time.Second, Timeout: time.Second})
		if err == nil {
			break
		}
		if !errors.Is(err, ctxlock.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("Acquire after restart: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // retrying against a recovering cluster
	}
}

// In Cluster mode a key whose tagged text starts with '}' gets an empty
// hash tag, so its Redis keys hash to different slots: such a key is
// refused as invalid, at once and for good (a permanent error), instead of
// failing every script with CROSSSLOT. A '}' further in is fine, and a
// standalone server takes any key.
func TestClusterKeyStartingWithBrace(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	b := newBackend(t, cl.Client(t))
	ctx := context.Background()
	for _, key := range []string{"}x", "}"} {
		_, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: key, Owner: owner(), TTL: 10 * time.Second, Timeout: time.Second})
		if !errors.Is(err, ctxlock.ErrInvalidKey) || errors.Is(err, ctxlock.ErrUnavailable) {
			t.Errorf("Acquire(%q) in Cluster mode: %v; want a permanent ErrInvalidKey", key, err)
		}
	}
	for _, key := range []string{"a}b", "a{b}c"} {
		l, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: key, Owner: owner(), TTL: 10 * time.Second, Timeout: time.Second})
		if err != nil {
			t.Errorf("Acquire(%q) in Cluster mode: %v; want the lease", key, err)
			continue
		}
		if errs := b.Release(ctx, []ctxlock.Lease{l}); errors.Join(errs...) != nil {
			t.Errorf("Release(%q): %v", key, errs)
		}
	}

	s := redistest.StartServer(t)
	single := newBackend(t, s.Client(t))
	l, err := single.Acquire(ctx, ctxlock.AcquireRequest{Key: "}x", Owner: owner(), TTL: 10 * time.Second, Timeout: time.Second})
	if err != nil {
		t.Fatalf("Acquire(%q) on one server: %v; want the lease", "}x", err)
	}
	if errs := single.Release(ctx, []ctxlock.Lease{l}); errors.Join(errs...) != nil {
		t.Errorf("Release: %v", errs)
	}
}
