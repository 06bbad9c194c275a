package postgres_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/locktest"
	"github.com/ctxlock/ctxlock/backends/postgres"
	"github.com/ctxlock/ctxlock/internal/faultproxy"
	"github.com/ctxlock/ctxlock/internal/pgtest"
)

// proxiedPool returns a pool on s whose connections, the Backend's
// listener included (it is made with the pool's connection config), go
// through a fault proxy.
func proxiedPool(t *testing.T, s *pgtest.Server) (*pgxpool.Pool, *faultproxy.Proxy) {
	t.Helper()
	p := faultproxy.Start(t, s.Addr())
	host, port, err := net.SplitHostPort(p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	pool := s.Pool(t, func(c *pgxpool.Config) {
		c.ConnConfig.Host, c.ConnConfig.Port = host, uint16(n)
	})
	return pool, p
}

// Liveness B through a network partition: the link of the holder's
// Manager (pool and listener) is blackholed for longer than the TTL while
// the server stays up. The holder's expiry channel closes (ErrExpired)
// before a Manager connected directly takes the key; once the link heals,
// the first Manager locks the key again. Tokens increase throughout.
func TestBlackholeLivenessB(t *testing.T) {
	s := pgtest.Start(t)
	ppool, proxy := proxiedPool(t, s)
	dpool := s.Pool(t)
	table := randomName("blackhole")
	b1 := newBackend(t, ppool, postgres.WithTable(table))
	b2 := newBackend(t, dpool, postgres.WithTable(table))
	const ttl = time.Second
	opts := ctxlock.WithDefaultLockOptions(ctxlock.WithTTL(ttl), ctxlock.WithAcquireTimeout(2*time.Second))
	m1 := newManager(t, b1, opts)
	m2 := newManager(t, b2, opts)
	// The holder's listener is up through the proxy before the fault.
	_, stopWatch := b1.Watch("warm-up")
	defer stopWatch()
	pollUntil(t, 10*time.Second, "the holder's listener", func() bool { return healthy(t, b1) })
	if proxy.Stats().Open < 2 {
		t.Fatalf("want the pool and the listener connected through the proxy; %+v", proxy.Stats())
	}

	var checker locktest.Checker
	holder := m1.NewLock("k")
	expired, err := holder.Lock(testCtx(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	holdStart, holdToken := time.Now(), holder.Token()

	type result struct {
		err           error
		at            time.Time
		holderExpired bool
	}
	done := make(chan result, 1)
	waiter := m2.NewLock("k")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		_, err := waiter.Lock(ctx)
		r := result{err: err, at: time.Now()}
		select {
		case <-expired:
			r.holderExpired = true
		default:
		}
		done <- r
	}()
	pollUntil(t, 10*time.Second, "the waiter's refused attempt", func() bool { return wanted(t, dpool, b2, "k") })

	proxy.Blackhole()
	var expiredAt time.Time
	select {
	case <-expired:
		expiredAt = time.Now()
	case <-time.After(10 * ttl):
		t.Fatal("the holder's expiry channel is still open 10 TTLs into the partition")
	}
	checker.Record(locktest.Hold{Key: "k", Owner: "holder (m1, partitioned)", Token: holdToken, Start: holdStart, End: expiredAt})
	if !errors.Is(holder.Err(), ctxlock.ErrExpired) {
		t.Errorf("holder.Err() = %v; want ErrExpired", holder.Err())
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("waiter (m2, direct): %v", r.err)
	}
	if !r.holderExpired {
		t.Fatal("the waiter acquired the key while the holder's expiry channel was still open")
	}
	checker.Record(locktest.Hold{Key: "k", Owner: "waiter (m2, direct)", Token: waiter.Token(), Start: r.at, End: time.Now()})
	if err := waiter.Unlock(); err != nil {
		t.Fatal(err)
	}

	// Heal: the first Manager locks again, with a larger token.
	proxy.Pass()
	if _, err := holder.Lock(testCtx(t, 30*time.Second)); err != nil {
		t.Fatalf("Lock through the healed link: %v", err)
	}
	start := time.Now()
	checker.Record(locktest.Hold{Key: "k", Owner: "holder again (m1, healed)", Token: holder.Token(), Start: start, End: time.Now()})
	if err := holder.Unlock(); err != nil {
		t.Fatal(err)
	}
	if n := checker.Check(t); n != 3 {
		t.Fatalf("checked %d holds, want 3", n)
	}
	// The listener recovers too (a ping after its idle time, or a
	// reconnect): the release notification reaches a waiter of m1 again.
	pollUntil(t, 30*time.Second, "the holder's listener after the heal", func() bool { return healthy(t, b1) })
}

// A slow link (latency both ways, pool and listener) breaks nothing: holds
// outlast several refreshes, Managers on either side of it contend
// without overlap, tokens increase, and releases wake the other side.
func TestDelayedLink(t *testing.T) {
	s := pgtest.Start(t)
	ppool, proxy := proxiedPool(t, s)
	dpool := s.Pool(t)
	table := randomName("delay")
	b1 := newBackend(t, ppool, postgres.WithTable(table))
	b2 := newBackend(t, dpool, postgres.WithTable(table))
	proxy.Delay(20*time.Millisecond, 20*time.Millisecond)
	const ttl = 600 * time.Millisecond
	// A round trip takes 40ms and more, a new connection several: the
	// acquire timeout must allow for that (the default, 100ms, is for a
	// nearby server with pooled connections).
	opts := ctxlock.WithDefaultLockOptions(ctxlock.WithTTL(ttl), ctxlock.WithAcquireTimeout(2*time.Second))
	ms := []*ctxlock.Manager{newManager(t, b1, opts), newManager(t, b2, opts)}

	// A hold through the slow link outlasts several refreshes.
	l := ms[0].NewLock("long")
	expired, err := l.Lock(testCtx(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	long := time.NewTimer(4 * ttl)
	select {
	case <-expired:
		t.Fatalf("a hold over a 40ms link ended within 4 TTLs: %v", l.Err())
	case <-long.C:
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}

	// Both Managers contend for one key.
	var checker locktest.Checker
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i, m := range ms {
		for g := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				who := "m" + strconv.Itoa(i) + "/g" + strconv.Itoa(g)
				l := m.NewLock("k")
				for range 8 {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					expired, err := l.Lock(ctx)
					cancel()
					if err != nil {
						errs <- err
						return
					}
					start := time.Now()
					var end time.Time
					select {
					case <-expired:
						errs <- errors.New(who + ": hold ended early: " + l.Err().Error())
						return
					default:
						end = time.Now()
					}
					checker.Record(locktest.Hold{Key: "k", Owner: who, Token: l.Token(), Start: start, End: end})
					if err := l.Unlock(); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := checker.Check(t); n != 32 {
		t.Errorf("checked %d holds, want 32", n)
	}
}
