package postgres_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/postgres"
	"github.com/ctxlock/ctxlock/internal/pgtest"
)

// newManager returns a Manager on b, closed when the test ends (before b,
// whose cleanup was registered first).
func newManager(t *testing.T, b ctxlock.Backend, opts ...ctxlock.ManagerOption) *ctxlock.Manager {
	t.Helper()
	m := ctxlock.NewManager(b, opts...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = m.Close(ctx)
	})
	return m
}

// pollUntil polls external server state until cond holds, failing the test
// after d.
func pollUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond) // polling the server
	}
}

// wanted reports whether key's lease was refused to another owner (the
// waiter has made its attempt and now waits).
func wanted(t *testing.T, pool *pgxpool.Pool, b *postgres.Backend, key string) bool {
	var w bool
	err := pool.QueryRow(testCtx(t, 5*time.Second), "SELECT wanted FROM "+b.Table()+" WHERE key = $1", []byte(key)).Scan(&w)
	return err == nil && w
}

// healthy reports whether b's Health finds nothing to report (the listener,
// once started, is listening).
func healthy(t *testing.T, b *postgres.Backend) bool {
	conds, err := b.Health(testCtx(t, 5*time.Second))
	return err == nil && len(conds) == 0
}

// listenerPids returns the backend pids of the Backends' listeners.
func listenerPids(t *testing.T, pool *pgxpool.Pool) []int32 {
	rows, err := pool.Query(testCtx(t, 5*time.Second), "SELECT pid FROM pg_stat_activity WHERE application_name = $1", postgres.ListenerApplicationName)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var pids []int32
	for rows.Next() {
		var p int32
		if err := rows.Scan(&p); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, p)
	}
	return pids
}

// waiterWokenByRelease has a waiter in another Manager (another Backend,
// as another process would have) woken by the release: with a retry delay
// and a holder TTL of a minute, only the notification can wake it within
// the Lock's bound. between runs after the waiter waits, before the
// release.
func waiterWokenByRelease(t *testing.T, pool *pgxpool.Pool, table string, between func(waiter *postgres.Backend)) {
	t.Helper()
	b1 := newBackend(t, pool, postgres.WithTable(table))
	b2 := newBackend(t, pool, postgres.WithTable(table))
	// A generous acquire timeout: an attempt that timed out (a new pool
	// connection on a loaded machine) would make the waiter back off for
	// its retry delay, a minute.
	opts := []ctxlock.LockOption{ctxlock.WithTTL(time.Minute), ctxlock.WithRetryDelay(time.Minute), ctxlock.WithAcquireTimeout(5 * time.Second)}
	m1 := newManager(t, b1, ctxlock.WithDefaultLockOptions(opts...))
	m2 := newManager(t, b2, ctxlock.WithDefaultLockOptions(opts...))
	holder := m1.NewLock("k")
	if _, err := holder.Lock(testCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Start the waiter's listener first: its first LISTEN wakes every
	// watcher, which would make the waiter retry on its own.
	_, stopWarm := b2.Watch("warm-up")
	defer stopWarm()
	pollUntil(t, 10*time.Second, "the waiter's listener", func() bool { return healthy(t, b2) })
	type result struct {
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	waiter := m2.NewLock("k")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	go func() {
		_, err := waiter.Lock(ctx)
		done <- result{err, time.Now()}
	}()
	pollUntil(t, 10*time.Second, "the waiter's refused attempt", func() bool { return wanted(t, pool, b1, "k") })
	if between != nil {
		between(b2)
	}
	released := time.Now()
	if err := holder.Unlock(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("waiter: %v (woken only by its minute-long retry delay?)", r.err)
	}
	t.Logf("waiter acquired %v after the release", r.at.Sub(released))
	if err := waiter.Unlock(); err != nil {
		t.Fatal(err)
	}
}

func TestWatchWakesWaiterOnRelease(t *testing.T) {
	s := pgtest.Start(t)
	pool := s.Pool(t)
	waiterWokenByRelease(t, pool, randomName("watch"), nil)
}

// The listener's connection is terminated by the server
// (pg_terminate_backend) while a waiter waits: the Backend reconnects,
// LISTENs again and wakes its watchers (the waiter retries: its refusal
// marks the row wanted again), and the release still wakes the waiter.
func TestWatchAfterListenerTerminated(t *testing.T) {
	s := pgtest.Start(t)
	pool := s.Pool(t)
	table := randomName("relisten")
	waiterWokenByRelease(t, pool, table, func(b *postgres.Backend) {
		if _, err := pool.Exec(testCtx(t, 5*time.Second), "UPDATE "+b.Table()+" SET wanted = false"); err != nil {
			t.Fatal(err)
		}
		var old []int32
		pollUntil(t, 10*time.Second, "a listener", func() bool {
			old = listenerPids(t, pool)
			return len(old) > 0
		})
		if _, err := pool.Exec(testCtx(t, 5*time.Second),
			"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", postgres.ListenerApplicationName); err != nil {
			t.Fatal(err)
		}
		pollUntil(t, 20*time.Second, "a new listener", func() bool {
			pids := listenerPids(t, pool)
			if len(pids) == 0 {
				return false
			}
			for _, p := range pids {
				for _, o := range old {
					if p == o {
						return false
					}
				}
			}
			return healthy(t, b)
		})
		pollUntil(t, 10*time.Second, "the waiter's retry after the re-LISTEN", func() bool { return wanted(t, pool, b, "k") })
	})
}

// Liveness B with a real fault: the server freezes (SIGSTOP) while a lock
// is held, and comes back after the lease's TTL. The holder's expiry
// channel closes (ErrExpired) before a waiter in another Manager, which
// gets the key once the server is back, has acquired it.
func TestLivenessBFrozenServer(t *testing.T) {
	s := pgtest.Start(t)
	pool := s.Pool(t)
	table := randomName("livenessb")
	b1 := newBackend(t, pool, postgres.WithTable(table))
	b2 := newBackend(t, pool, postgres.WithTable(table))
	const ttl = time.Second
	m1 := newManager(t, b1)
	m2 := newManager(t, b2)
	holder := m1.NewLock("k", ctxlock.WithTTL(ttl))
	expired, err := holder.Lock(testCtx(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		err           error
		holderExpired bool
	}
	done := make(chan result, 1)
	waiter := m2.NewLock("k", ctxlock.WithTTL(ttl))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		_, err := waiter.Lock(ctx)
		r := result{err: err}
		select {
		case <-expired:
			r.holderExpired = true
		default:
		}
		done <- r
	}()
	pollUntil(t, 10*time.Second, "the waiter's refused attempt", func() bool { return wanted(t, pool, b1, "k") })

	// The fault schedule: frozen for longer than the TTL, whatever the
	// Managers do meanwhile.
	s.Stop()
	thaw := time.AfterFunc(ttl+ttl/2, s.Cont)
	defer func() {
		if thaw.Stop() {
			s.Cont()
		}
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("waiter: %v", r.err)
	}
	if !r.holderExpired {
		t.Fatal("the waiter acquired the key while the holder's expiry channel was still open")
	}
	if !errors.Is(holder.Err(), ctxlock.ErrExpired) && !errors.Is(holder.Err(), ctxlock.ErrLost) {
		t.Fatalf("holder.Err() = %v; want ErrExpired (or ErrLost)", holder.Err())
	}
	if err := waiter.Unlock(); err != nil {
		t.Fatal(err)
	}
}

// The listener's connection is made as the pool's are: with its
// BeforeConnect and AfterConnect hooks (credentials that a hook fills in,
// such as short-lived tokens, are common). Here the pool's configuration
// names a role that does not exist and BeforeConnect puts the right one
// in: without the hook the listener could never log in, and waiters would
// only poll.
func TestListenerUsesPoolHooks(t *testing.T) {
	s := pgtest.Start(t)
	var after atomic.Int32
	pool := s.Pool(t, func(c *pgxpool.Config) {
		c.ConnConfig.User = "no_such_role"
		c.BeforeConnect = func(_ context.Context, cc *pgx.ConnConfig) error {
			cc.User = pgtest.Superuser
			return nil
		}
		c.AfterConnect = func(context.Context, *pgx.Conn) error {
			after.Add(1)
			return nil
		}
	})
	b := newBackend(t, pool)
	_, stop := b.Watch("k")
	defer stop()
	pollUntil(t, 10*time.Second, "the listener (LISTEN through the pool's hooks)", func() bool { return healthy(t, b) })
	if len(listenerPids(t, pool)) != 1 {
		t.Fatal("no listener connection")
	}
	if after.Load() < 2 { // the pool's connection, and the listener's
		t.Errorf("AfterConnect ran %d times; want it for the listener's connection too", after.Load())
	}
}
