package redlock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/redlock"
)

// With one node hung, a refusal's fan-out ends at the attempt's timeout;
// the give-back on the node that granted still gets its answer, so an
// attempt refused by a quorum of holders (3 of 5) is ErrHeld, not a fault,
// and TryLock of the key reports (false, nil, nil).
func TestRefusalWithHungNodeIsHeld(t *testing.T) {
	c := startNodes(t, 5)
	ctx := context.Background()
	key := uniqueKey("hung")
	// Another owner holds the key on nodes 1..3, a quorum of 5.
	settled(t, c.clients[1:4], func(sb *redlock.Backend) {
		if _, err := sb.Acquire(ctx, ctxlock.AcquireRequest{Key: key, Owner: owner(), TTL: time.Minute, Timeout: time.Second}); err != nil {
			t.Fatal(err)
		}
	})
	c.servers[4].Stop() // node 4 hangs
	t.Cleanup(c.servers[4].Cont)
	b := newBackend(t, c.clients)
	_, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: key, Owner: owner(), TTL: 10 * time.Second, Timeout: 200 * time.Millisecond})
	if !errors.Is(err, ctxlock.ErrHeld) {
		t.Errorf("Acquire of a key held on 3 of 5 nodes, node 4 hung = %v; want ErrHeld", err)
	}

	m := ctxlock.NewManager(b)
	defer m.Close(ctx)
	ok, _, err := m.NewLock(key, ctxlock.WithAcquireTimeout(200*time.Millisecond)).TryLock(ctx)
	if ok || err != nil {
		t.Errorf("TryLock of a key held on 3 of 5 nodes, node 4 hung = %v, %v; want false, nil", ok, err)
	}
	// node 0 granted each attempt: it gave the key back.
	lk, _, _ := b.Keys(key)
	if v, err := c.clients[0].Get(ctx, lk).Result(); !errors.Is(err, redis.Nil) {
		t.Logf("node 0 still has %q (%v)", v, err)
	}
}
