package goredis_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/backends/locktest"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// The whole contract through a go-redis failover client: the Manager finds
// the master through Sentinel.
func TestConformanceSentinel(t *testing.T) {
	sen := redistest.StartSentinel(t, 1, 1)
	c := sen.Client(t)
	locktest.Run(t, func(t *testing.T) ctxlock.Backend { return faulty(t, c) }, locktest.WithTTL(conformanceTTL))
}

// When the master dies and Sentinel promotes its replica, a hold whose
// lease had reached the replica lives on: it is refreshed on the new
// master, others find the key held there, its release hands the key to a
// waiter of another Manager, and fencing tokens go on increasing.
func TestSentinelFailoverKeepsReplicatedHold(t *testing.T) {
	sen := redistest.StartSentinel(t, 1, 1)
	// The failover (1s to find the master down, up to 1s before it starts,
	// the promotion, and the client's switch: 2-3.7s under load) must fit in
	// the two thirds of the TTL left after a refresh.
	replicatedHoldSurvives(t, 8*time.Second,
		func() redis.UniversalClient { return sen.Client(t) },
		func(string) *redistest.Server { return sen.Master(t) },
		func(ctx context.Context, old *redistest.Server, _ string) *redistest.Server {
			next, err := sen.WaitFailover(ctx, old)
			if err != nil {
				t.Fatal(err)
			}
			return next
		})
}

// replicatedHoldSurvives takes a hold with ttl through a client from
// newClient, waits until its lease is on a replica, kills the master
// (masterOf the lock key), waits for failover to return the new master of
// the key,
// and checks that the hold lives on there (waitRefreshed,
// handOffAfterFailover).
func replicatedHoldSurvives(t *testing.T, ttl time.Duration, newClient func() redis.UniversalClient,
	masterOf func(lockKey string) *redistest.Server, failover func(ctx context.Context, old *redistest.Server, lockKey string) *redistest.Server) {
	t.Helper()
	m1 := ctxlock.NewManager(newBackend(t, newClient()))
	m2 := ctxlock.NewManager(newBackend(t, newClient()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	l := m1.NewLock("held", ctxlock.WithTTL(ttl))
	expired, err := l.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	token := l.Token()
	lk, _, _ := newBackend(t, newClient()).Keys("held")
	old := masterOf(lk)
	if n, err := old.Client(t).Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT = %d, %v; want the lease on 1 replica", n, err)
	}

	old.Kill()
	next := failover(ctx, old, lk)
	if next == old {
		t.Fatal("the killed node is still the key's master")
	}
	nc := next.Client(t)
	waitRefreshed(ctx, t, nc, lk, ttl, l, expired)
	if err := l.Err(); err != nil || l.Token() != token {
		t.Fatalf("after the failover: Err %v, Token %d (was %d)", err, l.Token(), token)
	}

	handOffAfterFailover(ctx, t, l, token, m2.NewLock("held"), nc, lk)
	for _, m := range []*ctxlock.Manager{m1, m2} {
		if err := m.Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
}

// handOffAfterFailover checks a hold that survived a failover: other, of
// another Manager, finds its key held, waits (queued on the new master,
// which c talks to), and gets the key when holder unlocks, with a fencing
// token above the holder's.
func handOffAfterFailover(ctx context.Context, t *testing.T, holder ctxlock.Lock, token uint64, other ctxlock.Lock, c *redis.Client, lk string) {
	t.Helper()
	if ok, _, err := other.TryLock(ctx); ok || err != nil {
		t.Fatalf("another Manager's TryLock of the held key after the failover = %v, %v; want false, nil", ok, err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := other.Lock(ctx)
		got <- err
	}()
	waitQueued(ctx, t, c, lk)
	if err := holder.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("the waiter's Lock after the holder's Unlock: %v", err)
	}
	if other.Token() <= token {
		t.Fatalf("token after the failover %d, not above %d", other.Token(), token)
	}
	if err := other.Unlock(); err != nil {
		t.Fatal(err)
	}
}

// waitRefreshed waits until the lease of l, whose lock key is lk, has been
// refreshed on the server c talks to, a new master after a failover. The
// last refresh before the failover set the lease's TTL at least 1s (the
// time to find the old master down) earlier, so a remaining TTL within
// 500ms of the full ttl can only come from a refresh on the new master. It
// fails the test if the hold ends first or the lease is missing.
func waitRefreshed(ctx context.Context, t *testing.T, c *redis.Client, lk string, ttl time.Duration, l ctxlock.Lock, expired <-chan struct{}) {
	t.Helper()
	for {
		pttl, err := c.PTTL(ctx, lk).Result()
		if err != nil {
			t.Fatalf("PTTL on the new master: %v", err)
		}
		if pttl <= 0 {
			t.Fatalf("the lease is not on the new master (PTTL %v); the hold says %v", pttl, l.Err())
		}
		if pttl > ttl-500*time.Millisecond {
			return
		}
		select {
		case <-expired:
			t.Fatalf("the hold ended during the failover: %v", l.Err())
		case <-ctx.Done():
			t.Fatalf("the lease was never refreshed on the new master (PTTL %v)", pttl)
		case <-time.After(50 * time.Millisecond): // polling the server
		}
	}
}

// waitQueued waits until a waiter is queued for the lock key lk on the
// server c talks to.
func waitQueued(ctx context.Context, t *testing.T, c *redis.Client, lk string) {
	t.Helper()
	for {
		n, err := c.LLen(ctx, lk+":q").Result()
		if err != nil {
			t.Fatalf("LLEN of the queue: %v", err)
		}
		if n > 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatal("the waiter never queued")
		case <-time.After(time.Millisecond): // polling the server's state
		}
	}
}

// A planned failover (SENTINEL FAILOVER) leaves the old master running and
// taking writes until Sentinel turns it into a replica, seconds later, while
// clients learn of the switch one by one: a lease taken there vanishes. The
// hold must then end with ErrLost (at its next refresh on the new master),
// never live on without a lease. With min-replicas-to-write the old master
// refuses writes once its replicas have left it (NOREPLICAS, which the
// Backend reports as unavailable), so the Lock retries until it reaches the
// new master.
func TestSentinelPlannedFailover(t *testing.T) {
	for _, minReplicas := range []bool{false, true} {
		t.Run(fmt.Sprintf("min-replicas-to-write=%v", minReplicas), func(t *testing.T) {
			var opts []redistest.Option
			if minReplicas {
				opts = append(opts, redistest.WithArgs("--min-replicas-to-write", "1"))
			}
			sen := redistest.StartSentinel(t, 2, 1, opts...)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			m := ctxlock.NewManager(newBackend(t, sen.Client(t)))
			// The client is connected, to the old master, before the failover.
			warm := m.NewLock("warm")
			if _, err := warm.Lock(ctx); err != nil {
				t.Fatal(err)
			}
			if err := warm.Unlock(); err != nil {
				t.Fatal(err)
			}

			next := sen.Failover(t)
			l := m.NewLock("fresh", ctxlock.WithTTL(1500*time.Millisecond))
			expired, err := l.Lock(ctx)
			if err != nil {
				t.Fatal(err)
			}
			lk, _, _ := newBackend(t, next.Client(t)).Keys("fresh")
			n, err := next.Client(t).Exists(ctx, lk).Result()
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case n == 1:
				if err := l.Unlock(); err != nil {
					t.Fatal(err)
				}
			case minReplicas:
				t.Fatal("the lease taken after the failover is not on the new master")
			default:
				t.Log("the lease went to the old master")
				select {
				case <-expired:
					if !errors.Is(l.Err(), ctxlock.ErrLost) {
						t.Fatalf("a hold whose lease vanished ended with %v; want ErrLost", l.Err())
					}
				case <-ctx.Done():
					t.Fatal("a hold whose lease vanished never ended")
				}
			}
			if err := m.Close(ctx); err != nil {
				t.Fatalf("Close: %v", err)
			}
		})
	}
}

// As TestSentinelFailoverKeepsReplicatedHold, in a Redis Cluster: the
// master of the key's slot dies and its replica takes over the slot.
func TestClusterFailoverKeepsReplicatedHold(t *testing.T) {
	cl := redistest.StartClusterWithReplicas(t, 3, 1)
	// The failover (cluster-node-timeout 1s, the election, the slot map
	// reloaded: 2-3s under load) must fit in the two thirds of the TTL left
	// after a refresh.
	replicatedHoldSurvives(t, 9*time.Second,
		func() redis.UniversalClient { return cl.Client(t) },
		func(lk string) *redistest.Server { return cl.MasterFor(t, lk) },
		func(_ context.Context, _ *redistest.Server, lk string) *redistest.Server {
			cl.WaitReady(t)
			return cl.MasterFor(t, lk)
		})
}

// The subscription of a Backend on a Redis Cluster comes back after the
// master it was connected to dies and a replica takes over: reconnecting
// has the client reload its slot map, which go-redis would otherwise keep,
// naming the dead master, for a minute.
func TestClusterFailoverSubscriptionRecovers(t *testing.T) {
	cl := redistest.StartClusterWithReplicas(t, 3, 1)
	b := newBackend(t, cl.Client(t))
	released, stop := b.Watch("k")
	defer stop()
	_, _, channel := b.Keys("k")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	clients := map[*redistest.Server]*redis.Client{}
	for _, n := range cl.Nodes() {
		clients[n] = n.Client(t)
	}
	// subscribedOn returns a running node with the Backend's subscription.
	subscribedOn := func() *redistest.Server {
		for {
			for _, n := range cl.Nodes() {
				list, err := clients[n].Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text()
				if err == nil && strings.Contains(list, "sub=1") {
					return n
				}
			}
			select {
			case <-ctx.Done():
				t.Fatal("the subscription is on no running node")
			case <-time.After(10 * time.Millisecond): // polling the servers
			}
		}
	}
	subNode := subscribedOn()
	subNode.Kill()
	cl.WaitReady(t)
	if n := subscribedOn(); n == subNode {
		t.Fatal("the killed node still has the subscription")
	}
	// Drain the wake-ups of the reconnects: the message must come through.
	for drained := false; !drained; {
		select {
		case <-released:
		default:
			drained = true
		}
	}
	pub := cl.Client(t)
	if err := pub.Publish(ctx, channel, "k").Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-released:
	case <-ctx.Done():
		t.Fatal("a release published after the failover never woke the watcher")
	}
}

// After a planned failover a waiter whose subscription is still on the
// demoted master, which does not replicate the new master yet, misses the
// hand-off message; its retries (on its backoff, within MaxRetryDelay once
// its client has switched) find the key granted to it on the new master.
func TestSentinelPlannedFailoverWaiterGetsKey(t *testing.T) {
	sen := redistest.StartSentinel(t, 2, 1)
	old := sen.Master(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	holderClient := sen.Client(t)
	m1 := ctxlock.NewManager(newBackend(t, holderClient))
	m2 := ctxlock.NewManager(newBackend(t, sen.Client(t)))

	holder := m1.NewLock("k")
	if _, err := holder.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	waiter := m2.NewLock("k")
	got := make(chan error, 1)
	go func() {
		_, err := waiter.Lock(ctx)
		got <- err
	}()
	lk, _, _ := newBackend(t, holderClient).Keys("k")
	oc := old.Client(t)
	waitQueued(ctx, t, oc, lk)
	if n, err := oc.Do(ctx, "WAIT", 2, 5000).Int(); err != nil || n != 2 {
		t.Fatalf("WAIT = %d, %v; want the lease and the queue on 2 replicas", n, err)
	}

	next := sen.Failover(t)
	// The holder's client has switched once its writes reach the new master.
	nc := next.Client(t)
	for {
		if err := holderClient.Set(ctx, "switched", "1", 0).Err(); err == nil {
			if n, _ := nc.Exists(ctx, "switched").Result(); n == 1 {
				break
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal("the holder's client never switched to the new master")
		case <-time.After(20 * time.Millisecond): // polling the servers
		}
	}
	start := time.Now()
	if err := holder.Unlock(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("the waiter's Lock after the failover: %v", err)
		}
		t.Logf("the waiter got the key %v after the Unlock", time.Since(start))
	case <-ctx.Done():
		t.Fatal("the waiter never got the key released on the new master")
	}
	if err := waiter.Unlock(); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*ctxlock.Manager{m1, m2} {
		if err := m.Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
}

// After a planned failover the subscription of a Backend with waiters
// leaves the demoted master, which stays alive but does not hear the new
// master's releases: its health check publishes a probe on its inbox
// through the client, which has switched, and the probe never comes back,
// so it reconnects, to the new master.
func TestSubscriptionFollowsPlannedFailover(t *testing.T) {
	sen := redistest.StartSentinel(t, 1, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m1 := ctxlock.NewManager(newBackend(t, sen.Client(t)))
	wb := newBackend(t, sen.Client(t), goredis.WithHealthCheckInterval(200*time.Millisecond))
	m2 := ctxlock.NewManager(wb)
	holder := m1.NewLock("k")
	if _, err := holder.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	waiter := m2.NewLock("k")
	got := make(chan error, 1)
	go func() {
		_, err := waiter.Lock(ctx)
		got <- err
	}()
	old := sen.Master(t)
	lk, _, _ := newBackend(t, sen.Client(t)).Keys("k")
	waitQueued(ctx, t, old.Client(t), lk)
	inboxSubscribers := func(c *redis.Client) int64 {
		subs, err := c.PubSubNumSub(ctx, wb.Inbox()).Result()
		if err != nil {
			t.Fatal(err)
		}
		return subs[wb.Inbox()]
	}
	oc := old.Client(t)
	for inboxSubscribers(oc) != 1 {
		select {
		case <-ctx.Done():
			t.Fatal("the waiter's process never subscribed to its inbox")
		case <-time.After(5 * time.Millisecond): // polling the server
		}
	}
	// The new master has the lease and the queue: the waiter waits there too.
	if n, err := oc.Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT = %d, %v; want the lease and the queue on the replica", n, err)
	}

	next := sen.Failover(t)
	nc := next.Client(t)
	// Sentinel itself disconnects the demoted master's subscribers when it
	// turns it into a replica, 8-10s later; the probe moves the
	// subscription within a few health checks of the client's switch.
	moved := time.After(5 * time.Second)
	for {
		if inboxSubscribers(nc) == 1 {
			break
		}
		select {
		case <-moved:
			t.Fatal("the waiter's subscription did not move to the new master within 5s")
		case <-time.After(20 * time.Millisecond): // polling the server
		}
	}
	if err := holder.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("the waiter's Lock: %v", err)
	}
	if err := waiter.Unlock(); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*ctxlock.Manager{m1, m2} {
		if err := m.Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
}
