package redlock_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/redlock"
)

func TestNewValidates(t *testing.T) {
	mk := func(n int) []redis.UniversalClient {
		cs := make([]redis.UniversalClient, n)
		for i := range cs {
			c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", i+1)})
			t.Cleanup(func() { _ = c.Close() })
			cs[i] = c
		}
		return cs
	}
	if _, err := redlock.New(mk(0)); !errors.Is(err, ctxlock.ErrInvalidOption) {
		t.Errorf("New with no nodes: %v; want ErrInvalidOption", err)
	}
	for n, quorum := range map[int]int{1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 6: 4} {
		b, err := redlock.New(mk(n))
		if err != nil || b.Quorum() != quorum {
			t.Errorf("New with %d nodes: %v; want quorum %d", n, err, quorum)
			continue
		}
		b.Close()
	}
	withNil := mk(3)
	withNil[1] = nil
	if _, err := redlock.New(withNil); !errors.Is(err, ctxlock.ErrInvalidOption) {
		t.Errorf("New with a nil client: %v; want ErrInvalidOption", err)
	}
	for _, o := range []redlock.Option{
		redlock.WithDriftFactor(-0.1), redlock.WithDriftFactor(0.5),
		redlock.WithTimeoutFactor(0), redlock.WithTimeoutFactor(0.6),
	} {
		if _, err := redlock.New(mk(3), o); !errors.Is(err, ctxlock.ErrInvalidOption) {
			t.Errorf("New with a bad option: %v; want ErrInvalidOption", err)
		}
	}
	b, err := redlock.New(mk(5), redlock.WithDriftFactor(0.02), redlock.WithTimeoutFactor(0.05))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.BackendName() != "redlock" || b.Len() != 5 || b.Quorum() != 3 {
		t.Fatalf("BackendName %q, Len %d, Quorum %d", b.BackendName(), b.Len(), b.Quorum())
	}
}

func acquire(t *testing.T, b ctxlock.Backend, key string, ttl time.Duration) (ctxlock.Lease, error) {
	t.Helper()
	return b.Acquire(context.Background(), ctxlock.AcquireRequest{Key: key, Owner: owner(), TTL: ttl, Timeout: time.Second})
}

// TestAcquireHeldEverywhere: another owner on every node → HeldError whose
// Remaining is when enough holders expire, with a QuorumError listing the
// taken nodes.
func TestAcquireHeldEverywhere(t *testing.T) {
	c := startNodes(t, 5)
	b := newBackend(t, c.clients)
	key := uniqueKey("k")
	first, err := acquire(t, b, key, 10*time.Second)
	if err != nil || first.Token == 0 {
		t.Fatalf("first Acquire: %+v, %v", first, err)
	}
	_, err = acquire(t, b, key, 10*time.Second)
	var he *ctxlock.HeldError
	if !errors.As(err, &he) || !errors.Is(err, ctxlock.ErrHeld) {
		t.Fatalf("second Acquire: %v; want a HeldError", err)
	}
	if he.Remaining <= 9*time.Second || he.Remaining > 10*time.Second {
		t.Errorf("Remaining %v; want just under 10s", he.Remaining)
	}
	var qe *redlock.QuorumError
	// The first Acquire returned at its quorum; its slowest node may still
	// have been answering, and granted this attempt.
	if !errors.As(err, &qe) || qe.Count(redlock.NodeTaken) < 3 || qe.OK+qe.Count(redlock.NodeTaken) != 5 || qe.Quorum != 3 || qe.Nodes != 5 {
		t.Fatalf("QuorumError: %+v", qe)
	}
	if errors.Is(err, ctxlock.ErrUnavailable) || qe.Transient() {
		t.Errorf("a held key must not look like an outage: %v", err)
	}
	for _, f := range qe.Failures {
		if f.Addr == "" || !errors.Is(f, ctxlock.ErrHeld) {
			t.Errorf("node failure %v: want an address and ErrHeld", f)
		}
	}
	if errs := b.Release(context.Background(), []ctxlock.Lease{first}); errors.Join(errs...) != nil {
		t.Fatalf("Release: %v", errs)
	}
}

// TestAcquireHeldOnQuorumReleasesMinority: a key held by others on 3 of 5
// nodes (with different TTLs) → HeldError with the soonest holder's TTL, and
// the two nodes that granted the failed attempt are released before Acquire
// returns.
func TestAcquireHeldOnQuorumReleasesMinority(t *testing.T) {
	c := startNodes(t, 5)
	b := newBackend(t, c.clients)
	key := uniqueKey("k")
	lk, _, _ := b.Keys(key)
	ctx := context.Background()
	for i, ttl := range []time.Duration{3 * time.Second, 1 * time.Second, 5 * time.Second} {
		if err := c.clients[i].Set(ctx, lk, "someone-else", ttl).Err(); err != nil {
			t.Fatal(err)
		}
	}
	_, err := acquire(t, b, key, 10*time.Second)
	var he *ctxlock.HeldError
	if !errors.As(err, &he) {
		t.Fatalf("Acquire: %v; want HeldError", err)
	}
	if he.Remaining <= 500*time.Millisecond || he.Remaining > time.Second {
		t.Errorf("Remaining %v; want the soonest holder's TTL (≤ 1s)", he.Remaining)
	}
	var qe *redlock.QuorumError
	if !errors.As(err, &qe) || qe.OK != 2 || qe.Count(redlock.NodeTaken) != 3 {
		t.Fatalf("QuorumError %+v", qe)
	}
	for _, i := range []int{3, 4} {
		if n, err := c.clients[i].Exists(ctx, lk).Result(); err != nil || n != 0 {
			t.Errorf("node %d still has the failed attempt's lease (exists %d, %v)", i, n, err)
		}
	}
}

// TestFencingTokensSurviveDivergentCounters: the counters of the nodes
// drift apart; the token is the max of the granting quorum's counters, the
// lagging granting nodes are raised to it, so the next hold's token is
// larger even without the node that had the max.
func TestFencingTokensSurviveDivergentCounters(t *testing.T) {
	c := startNodes(t, 5)
	b := newBackend(t, c.clients)
	key := uniqueKey("k")
	_, fk, _ := b.Keys(key)
	ctx := context.Background()
	// Nodes 3 and 4 down: the quorum is exactly nodes 0, 1 and 2.
	c.servers[3].Kill()
	c.servers[4].Kill()
	if err := c.clients[0].Set(ctx, fk, 100, 0).Err(); err != nil {
		t.Fatal(err)
	}
	first, err := acquire(t, b, key, 10*time.Second)
	if err != nil || first.Token != 101 {
		t.Fatalf("Acquire: %+v, %v; want token 101 (max of the counters)", first, err)
	}
	for i, cl := range c.clients[:3] {
		if n, err := cl.Get(ctx, fk).Int64(); err != nil || n != 101 {
			t.Errorf("node %d counter %d (%v); want raised to 101", i, n, err)
		}
	}
	if errs := b.Release(ctx, []ctxlock.Lease{first}); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	// Nodes 3 and 4 come back empty; node 0, which had the largest
	// counter, dies. Every quorum of the rest includes node 1 or 2.
	c.servers[3].Restart()
	c.servers[4].Restart()
	c.servers[0].Kill()
	second, err := acquire(t, b, key, 10*time.Second)
	if err != nil || second.Token <= first.Token {
		t.Fatalf("Acquire without node 0: %+v, %v; want a token > %d", second, err, first.Token)
	}
}

// TestExtendLostReleasesRemainder: a lease gone from 3 of 5 nodes is lost,
// and released on the 2 nodes that still had it; gone from 2 it is kept.
func TestExtendLostReleasesRemainder(t *testing.T) {
	c := startNodes(t, 5)
	b := newBackend(t, c.clients)
	ctx := context.Background()
	kept, lost := uniqueKey("kept"), uniqueKey("lost")
	// Put both leases on every node directly (an Acquire returns at its
	// quorum, so its last node may still be answering).
	keptKey, _, _ := b.Keys(kept)
	lostKey, _, _ := b.Keys(lost)
	lk := ctxlock.Lease{Key: kept, Owner: owner(), Token: 1}
	ll := ctxlock.Lease{Key: lost, Owner: owner(), Token: 1}
	for _, cl := range c.clients {
		cl.Set(ctx, keptKey, lk.Owner, 10*time.Second)
		cl.Set(ctx, lostKey, ll.Owner, 10*time.Second)
	}
	for i := range 2 {
		c.clients[i].Del(ctx, keptKey)
	}
	for i := range 3 {
		c.clients[i].Del(ctx, lostKey)
	}
	errs := b.Extend(ctx, []ctxlock.Lease{lk, ll}, 10*time.Second)
	if len(errs) != 2 || errs[0] != nil {
		t.Fatalf("Extend: %v; want the lease on 3 of 5 kept", errs)
	}
	if !errors.Is(errs[1], ctxlock.ErrLost) || errors.Is(errs[1], ctxlock.ErrUnavailable) {
		t.Fatalf("Extend of a lease on 2 of 5: %v; want ErrLost", errs[1])
	}
	var qe *redlock.QuorumError
	if !errors.As(errs[1], &qe) || qe.Count(redlock.NodeTaken) != 3 || qe.Op != "extend" {
		t.Fatalf("QuorumError %+v", qe)
	}
	for i := 3; i < 5; i++ {
		if n, _ := c.clients[i].Exists(ctx, lostKey).Result(); n != 0 {
			t.Errorf("node %d still has the lost lease", i)
		}
	}
	if errs := b.Release(ctx, []ctxlock.Lease{lk}); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
}

// TestWatchAnyNode: a release published on any single node wakes a watcher.
func TestWatchAnyNode(t *testing.T) {
	c := startNodes(t, 3)
	b := newBackend(t, c.clients)
	key := uniqueKey("k")
	_, _, channel := b.Keys(key)
	for i, cl := range c.clients {
		ch, stop := b.Watch(key)
		if ch == nil {
			t.Fatal("nil watch channel")
		}
		if err := cl.Publish(context.Background(), channel, "x").Err(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("no wake-up from a publish on node %d", i)
		}
		stop()
		stop() // idempotent
	}
	_, unstopped := b.Watch(key) // Close must not wait for it
	_ = b.Close()
	unstopped()
	if ch, stop := b.Watch(key); ch != nil {
		stop()
		t.Fatal("Watch after Close: want a nil channel")
	}
}

func TestHealth(t *testing.T) {
	c := startNodes(t, 3)
	b := newBackend(t, c.clients)
	ctx := context.Background()
	if conds, err := b.Health(ctx); err != nil {
		t.Fatalf("Health: %v %v", conds, err)
	}
	c.servers[0].Kill()
	conds, err := b.Health(ctx)
	if err != nil || !strings.Contains(strings.Join(conds, "\n"), "2 of 3 nodes healthy") {
		t.Fatalf("Health with one node down: %q, %v; want a condition and no error", conds, err)
	}
	c.servers[1].Kill()
	_, err = b.Health(ctx)
	var qe *redlock.QuorumError
	if !errors.Is(err, ctxlock.ErrUnavailable) || !errors.As(err, &qe) || qe.Count(redlock.NodeUnreachable) != 2 {
		t.Fatalf("Health with two of three down: %v; want a quorum error", err)
	}
}
