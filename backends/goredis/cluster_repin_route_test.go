package goredis_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock/internal/redistest"
)

// A master's subscription that moved to another master (repin: its first
// key's slot is now served there) is no longer that master's: later
// watches of keys still on the first master subscribe on it, not on the
// node the subscription moved to (where they would be heard relayed over
// the cluster bus only, for as long as the hub lives).
func TestClusterRepinnedHubNotReusedForOldMaster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	c := cl.Client(t)
	b := newBackend(t, c)
	ctx := context.Background()

	// Two keys on one master X, in different slots.
	var k1, k2, lk1 string
	var x string
	slot1 := int64(-1)
	for i := 0; k2 == "" && i < 10000; i++ {
		k := fmt.Sprintf("rp%d", i)
		lk, _, _ := b.Keys(k)
		node, err := c.MasterForKey(ctx, lk)
		if err != nil {
			t.Fatal(err)
		}
		slot, err := c.ClusterKeySlot(ctx, lk).Result()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case k1 == "":
			k1, lk1, x, slot1 = k, lk, node.Options().Addr, slot
		case node.Options().Addr == x && slot != slot1:
			k2 = k
		}
	}
	if k2 == "" {
		t.Fatal("no two keys on one master")
	}
	_, _, ch1 := b.Keys(k1)
	_, _, ch2 := b.Keys(k2)
	var xs, z *redistest.Server
	for _, n := range cl.Nodes() {
		if n.Addr() == x {
			xs = n
		} else if z == nil {
			z = n
		}
	}

	_, stop1 := b.Watch(k1)
	defer stop1()
	numSubOn(t, cl, x, ch1, 1)

	// k1's slot moves to Z; the Backend's client knows it.
	cl.MoveSlot(t, int(slot1), z, 0)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.ReloadState(ctx)
		if node, err := c.MasterForKey(ctx, lk1); err == nil && node.Options().Addr == z.Addr() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the client's slot map never named the new master of k1's slot")
		}
		time.Sleep(10 * time.Millisecond) // polling the client's slot map
	}

	// The subscription on X loses its connection: it moves to Z, where
	// k1's slot now is.
	xc := xs.Client(t)
	zc := z.Client(t)
	deadline = time.Now().Add(15 * time.Second)
	for moved := false; !moved; {
		if err := xc.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
		for poll := time.Now().Add(time.Second); !moved && time.Now().Before(poll); {
			m, err := zc.PubSubNumSub(ctx, ch1).Result()
			if err != nil {
				t.Fatal(err)
			}
			if moved = m[ch1] == 1; !moved {
				time.Sleep(10 * time.Millisecond) // polling the server's state
			}
		}
		if !moved && time.Now().After(deadline) {
			t.Fatal("the subscription never moved to k1's new master")
		}
	}

	// k2 is still on X: its channel is subscribed there.
	_, stop2 := b.Watch(k2)
	defer stop2()
	numSubOn(t, cl, x, ch2, 1)
}
