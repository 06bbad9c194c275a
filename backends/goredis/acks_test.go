package goredis_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// startReplicated starts a master with one replica acknowledging its
// writes and returns
// clients of both and the replica (frozen with Stop; Cont runs at cleanup).
func startReplicated(t testing.TB) (master, replica *redis.Client, rs *redistest.Server) {
	t.Helper()
	sen := redistest.StartSentinel(t, 1, 1)
	sen.WaitAcks(t)
	rs = sen.Servers()[1]
	t.Cleanup(rs.Cont)
	return sen.Servers()[0].Client(t), rs.Client(t), rs
}

// notReplicated fails the test unless err is a transient shortfall of
// replica acknowledgements.
func notReplicated(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, goredis.ErrNotReplicated) || !errors.Is(err, ctxlock.ErrUnavailable) {
		t.Fatalf("%s with the replica frozen: %v; want ErrNotReplicated, transient", what, err)
	}
}

// With WithReplicaAcks, the Backend reports a lease taken or extended only
// once a replica has acknowledged it; an acquire that the replica did not
// acknowledge gives the key back at once.
func TestReplicaAcks(t *testing.T) {
	c, rc, replica := startReplicated(t)
	b := newBackend(t, c, goredis.WithReplicaAcks(1, 50*time.Millisecond))
	ctx := context.Background()

	held := acquire(t, b, "acked", 10*time.Second)
	lk, fk, _ := b.Keys("acked")
	// WAIT has returned: the replica has the lease and its token already.
	if v, err := rc.Get(ctx, lk).Result(); err != nil || v != held.Owner {
		t.Fatalf("the replica's lease after Acquire = %q, %v; want %q", v, err, held.Owner)
	}
	if v, err := rc.Get(ctx, fk).Result(); err != nil || v != strconv.FormatUint(held.Token, 10) {
		t.Fatalf("the replica's fencing counter after Acquire = %q, %v; want %d", v, err, held.Token)
	}

	replica.Stop()
	// Without its scripts the server answers NOSCRIPT, and the writes go
	// in a second pipeline (EVAL), which needs a WAIT of its own.
	flushScripts := func() {
		if err := c.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	flushScripts()
	req := ctxlock.AcquireRequest{Key: "unacked", Owner: owner(), TTL: 10 * time.Second, Timeout: time.Second}
	_, err := b.Acquire(ctx, req)
	notReplicated(t, "Acquire", err)
	ulk, _, _ := b.Keys("unacked")
	if n, err := c.Exists(ctx, ulk).Result(); err != nil || n != 0 {
		t.Fatalf("the unacknowledged lease is still on the master (EXISTS %d, %v): it was not given back", n, err)
	}
	errs := b.Extend(ctx, []ctxlock.Lease{held}, 10*time.Second)
	notReplicated(t, "Extend", errs[0])
	flushScripts()
	errs = b.Extend(ctx, []ctxlock.Lease{held}, 10*time.Second)
	notReplicated(t, "Extend (EVAL)", errs[0])
	// Releases do not wait for replicas.
	other := acquireWithoutAcks(t, c, "released")
	if errs := b.Release(ctx, []ctxlock.Lease{other}); errs[0] != nil {
		t.Fatalf("Release with the replica frozen: %v", errs[0])
	}

	replica.Cont()
	if errs := b.Extend(ctx, []ctxlock.Lease{held}, 10*time.Second); errs[0] != nil {
		t.Fatalf("Extend once the replica is back: %v", errs[0])
	}
	if _, err := b.Acquire(ctx, req); err != nil {
		t.Fatalf("Acquire once the replica is back: %v", err)
	}
}

// With WithReplicaAcks a waiter is told of a grant only as a hint (a zero
// Handoff): the release that wrote the grant did not wait for replicas, so
// the waiter takes the key up with an Acquire, which does.
func TestReplicaAcksGrantIsHint(t *testing.T) {
	c, _, replica := startReplicated(t)
	b := newBackend(t, c, goredis.WithReplicaAcks(1, 50*time.Millisecond))
	ctx := context.Background()
	holder := acquire(t, b, "q", 10*time.Second)
	turns, stop := b.WatchWaiter("q", "w1")
	defer stop()
	mustRefuse(t, b, "w1")
	drain(turns)
	if errs := b.Release(ctx, []ctxlock.Lease{holder}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	select {
	case h := <-turns:
		if h != (ctxlock.Handoff{}) {
			t.Fatalf("w1 was told %+v; want a hint, the zero Handoff", h)
		}
	case <-time.After(waitLong):
		t.Fatal("w1 was not told of the release")
	}
	replica.Stop()
	_, err := b.Acquire(ctx, waitReq("w1"))
	notReplicated(t, "w1's Acquire of its grant", err)
	// The unacknowledged grant is not given back (a give-back landing late
	// could delete it after w1's next attempt adopted it): it stays w1's.
	lk, _, _ := b.Keys("q")
	v, err := c.Get(ctx, lk).Result()
	if err != nil || !strings.HasPrefix(v, "w1:") {
		t.Fatalf("the key after w1's unacknowledged Acquire of its grant: %q, %v; want the grant, kept for w1", v, err)
	}
	replica.Cont()
	l, err := b.Acquire(ctx, waitReq("w1"))
	if err != nil || l.Owner != v || l.Token <= holder.Token {
		t.Fatalf("w1's Acquire once the replica is back = %+v, %v; want its grant %q, with a token above %d", l, err, v, holder.Token)
	}
}

// acquireWithoutAcks takes key through a Backend without WithReplicaAcks.
func acquireWithoutAcks(t *testing.T, c *redis.Client, key string) ctxlock.Lease {
	t.Helper()
	return acquire(t, newBackend(t, c), key, 10*time.Second)
}

// Through a Manager: while the replica does not acknowledge, a hold is not
// refreshed and expires, a Lock is not granted (its error says why), and a
// waiter does not get the key a release hands it; once the replica is back,
// all goes on.
func TestReplicaAcksManager(t *testing.T) {
	c, rc, replica := startReplicated(t)
	newManager := func() *ctxlock.Manager {
		// Redis times WAIT out on its hz timer (every 100ms), so an
		// attempt needs more than the default 100ms to hear a shortfall.
		return ctxlock.NewManager(newBackend(t, c, goredis.WithReplicaAcks(1, 50*time.Millisecond)),
			ctxlock.WithDefaultLockOptions(ctxlock.WithAcquireTimeout(time.Second)))
	}
	m1, m2 := newManager(), newManager()
	t.Cleanup(func() {
		_ = m1.Close(context.Background())
		_ = m2.Close(context.Background())
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("hold expires", func(t *testing.T) {
		l := m1.NewLock("expires", ctxlock.WithTTL(900*time.Millisecond))
		expired, err := l.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		replica.Stop()
		defer replica.Cont()
		select {
		case <-expired:
		case <-ctx.Done():
			t.Fatal("the hold outlived refreshes the replica did not acknowledge")
		}
		if !errors.Is(l.Err(), ctxlock.ErrExpired) {
			t.Fatalf("Err after the refreshes fell short = %v; want ErrExpired", l.Err())
		}
	})

	t.Run("lock not granted", func(t *testing.T) {
		replica.Stop()
		defer replica.Cont()
		lctx, lcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer lcancel()
		_, err := m1.NewLock("refused").Lock(lctx)
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, goredis.ErrNotReplicated) {
			t.Fatalf("Lock with the replica frozen = %v; want DeadlineExceeded joined with ErrNotReplicated", err)
		}
	})

	t.Run("grant not taken up", func(t *testing.T) {
		holder, waiter := m1.NewLock("handoff"), m2.NewLock("handoff")
		if _, err := holder.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithTimeout(ctx, time.Second)
		defer wcancel()
		got := make(chan error, 1)
		go func() {
			_, err := waiter.Lock(wctx)
			got <- err
		}()
		lk, fk, _ := goredis.New(c).Keys("handoff")
		waitQueued(ctx, t, c, lk)
		replica.Stop()
		if err := holder.Unlock(); err != nil {
			t.Fatal(err)
		}
		if err := <-got; !errors.Is(err, goredis.ErrNotReplicated) {
			t.Fatalf("the waiter's Lock after a grant the replica did not acknowledge = %v; want ErrNotReplicated", err)
		}
		replica.Cont()
		if _, err := waiter.Lock(ctx); err != nil {
			t.Fatalf("Lock once the replica is back: %v", err)
		}
		if v, err := rc.Get(ctx, fk).Result(); err != nil || v != strconv.FormatUint(waiter.Token(), 10) {
			t.Fatalf("the replica's fencing counter = %q, %v; want the hold's token %d", v, err, waiter.Token())
		}
		if err := waiter.Unlock(); err != nil {
			t.Fatal(err)
		}
	})
}

// Cluster and Ring pipelines span servers, and WAIT counts one connection's
// writes (a keyless WAIT goes to any server): WithReplicaAcks is refused
// there, with a clear error, not ignored.
func TestReplicaAcksNeedsOneServerClient(t *testing.T) {
	cl := redistest.StartCluster(t, 1)
	s := redistest.StartServer(t)
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": s.Addr()}})
	t.Cleanup(func() { _ = ring.Close() })
	for name, c := range map[string]redis.UniversalClient{"cluster": cl.Client(t), "ring": ring} {
		b := newBackend(t, c, goredis.WithReplicaAcks(1, 0))
		ctx := context.Background()
		_, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: "k", Owner: owner(), TTL: time.Second, Timeout: time.Second})
		if !errors.Is(err, ctxlock.ErrInvalidOption) {
			t.Fatalf("Acquire through a %s client with WithReplicaAcks = %v; want ErrInvalidOption", name, err)
		}
		errs := b.Extend(ctx, []ctxlock.Lease{{Key: "k", Owner: owner(), Token: 1}}, time.Second)
		if !errors.Is(errs[0], ctxlock.ErrInvalidOption) {
			t.Fatalf("Extend through a %s client with WithReplicaAcks = %v; want ErrInvalidOption", name, errs[0])
		}
		// A start-up health check tells of the mistake before any Lock.
		conds, err := b.Health(ctx)
		if !errors.Is(err, ctxlock.ErrInvalidOption) || len(conds) == 0 || !strings.Contains(conds[0], "WithReplicaAcks") {
			t.Fatalf("Health through a %s client with WithReplicaAcks = %q, %v; want a WithReplicaAcks condition and ErrInvalidOption", name, conds, err)
		}
	}
}

// BenchmarkReplicaAcks is the price of WithReplicaAcks(1, …) on a master
// with one replica, all on loopback: an Acquire and a Release of a key per
// op, from one goroutine (a round trip each, the WAIT on the acquire's) and
// from 4×GOMAXPROCS goroutines (batched, one WAIT per batch).
//
//	go test -run x -bench ReplicaAcks ./backends/goredis
func BenchmarkReplicaAcks(b *testing.B) {
	c, _, _ := startReplicated(b)
	for _, acks := range []bool{false, true} {
		var opts []goredis.Option
		if acks {
			opts = append(opts, goredis.WithReplicaAcks(1, 100*time.Millisecond))
		}
		be := newBackend(b, c, opts...)
		op := func(key string) {
			l, err := be.Acquire(context.Background(), ctxlock.AcquireRequest{Key: key, Owner: owner(), TTL: 10 * time.Second, Timeout: time.Second})
			if err != nil {
				b.Fatal(err)
			}
			if errs := be.Release(context.Background(), []ctxlock.Lease{l}); errs[0] != nil {
				b.Fatal(errs[0])
			}
		}
		b.Run(fmt.Sprintf("acks=%v/serial", acks), func(b *testing.B) {
			for b.Loop() {
				op("bench")
			}
		})
		b.Run(fmt.Sprintf("acks=%v/parallel", acks), func(b *testing.B) {
			var n atomic.Int64
			b.SetParallelism(4) // 8 goroutines on 2 cores
			b.RunParallel(func(pb *testing.PB) {
				key := fmt.Sprint("bench-", n.Add(1))
				for pb.Next() {
					op(key)
				}
			})
		})
	}
}
