package goredis_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// keyPerMaster returns one lock key on each master of cl, by master address.
func keyPerMaster(t *testing.T, cl *redistest.Cluster, lockKey func(string) string) map[string]string {
	t.Helper()
	c := cl.Client(t)
	ctx := context.Background()
	keys := map[string]string{}
	for i := 0; len(keys) < len(cl.Nodes()) && i < 1000; i++ {
		k := fmt.Sprintf("local%d", i)
		node, err := c.MasterForKey(ctx, lockKey(k))
		if err != nil {
			t.Fatal(err)
		}
		if addr := node.Options().Addr; keys[addr] == "" {
			keys[addr] = k
		}
	}
	if len(keys) != len(cl.Nodes()) {
		t.Fatalf("keys on %d masters, want %d", len(keys), len(cl.Nodes()))
	}
	return keys
}

// numSubOn polls PUBSUB NUMSUB channel on the node at addr (in Cluster mode
// it counts that node's own subscribers only) until it reports want.
func numSubOn(t *testing.T, cl *redistest.Cluster, addr, channel string, want int64) {
	t.Helper()
	var srv *redistest.Server
	for _, n := range cl.Nodes() {
		if n.Addr() == addr {
			srv = n
		}
	}
	if srv == nil {
		t.Fatalf("no node %s", addr)
	}
	c := srv.Client(t)
	ctx := context.Background()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, err := c.PubSubNumSub(ctx, channel).Result()
		if err != nil {
			t.Fatal(err)
		}
		if m[channel] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("PUBSUB NUMSUB %s on %s = %d, want %d: the subscription is not on the key's master", channel, addr, m[channel], want)
		}
		time.Sleep(10 * time.Millisecond) // polling the server's state
	}
}

// In Cluster mode a key's release channel, and the inbox of the waiters on
// it, are subscribed on the key's master, so that what the master publishes
// is heard there rather than relayed over the cluster bus (which Redis 7.0
// delays: no TCP_NODELAY on its outgoing bus links). And a hand-off to a
// waiter of another Backend reaches it whichever master its key is on.
func TestClusterSubscriptionOnKeysMaster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	b := newBackend(t, cl.Client(t))
	w := newBackend(t, cl.Client(t))
	keys := keyPerMaster(t, cl, func(k string) string { lk, _, _ := b.Keys(k); return lk })
	ctx := context.Background()

	for addr, k := range keys {
		_, stop := b.Watch(k)
		t.Cleanup(stop)
		_, _, channel := b.Keys(k)
		numSubOn(t, cl, addr, channel, 1)
	}
	for addr, k := range keys {
		holder := acquire(t, b, k, 10*time.Second)
		waiter := "w-" + k
		req := ctxlock.AcquireRequest{Key: k, Owner: owner(), TTL: 10 * time.Second, Timeout: time.Second, Waiter: waiter}
		if _, err := w.Acquire(ctx, req); !errors.Is(err, ctxlock.ErrHeld) {
			t.Fatalf("Acquire by %s: %v, want refused", waiter, err)
		}
		turns, stop := w.WatchWaiter(k, waiter)
		t.Cleanup(stop)
		numSubOn(t, cl, addr, w.Inbox(), 1)
		drain(turns)
		if errs := b.Release(ctx, []ctxlock.Lease{holder}); errors.Join(errs...) != nil {
			t.Fatal(errs)
		}
		h := granted(t, turns, "the release of "+k+" on "+addr)
		if l, err := w.Acquire(ctx, req); err != nil || l.Token != h.Token {
			t.Fatalf("%s's Acquire after its grant = %+v, %v; want token %d", waiter, l, err, h.Token)
		}
	}
}
