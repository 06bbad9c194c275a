package postgres_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/pgtest"
)

// Batches that share leases lock their rows in one order (by key), so they
// never deadlock: a Manager sends an Extend and a Release of the same
// leases at once when it unlocks (or closes) while a refresh is in flight,
// and its batches list leases in no particular order. A deadlock costs
// deadlock_timeout (1s by default) of blocking before PostgreSQL aborts
// one of the statements, a long stall next to short TTLs; here
// deadlock_timeout is 10ms so that one shows as an error at once.
func TestBatchesDoNotDeadlock(t *testing.T) {
	s := pgtest.Start(t)
	pool := s.Pool(t, func(c *pgxpool.Config) {
		c.ConnConfig.RuntimeParams["deadlock_timeout"] = "10ms"
	})
	b := newBackend(t, pool)
	// Enough other rows that the planner looks the batch's keys up by the
	// primary key in the batch's order, as on a production table.
	if _, err := pool.Exec(testCtx(t, 30*time.Second), "INSERT INTO "+b.Table()+
		" (key, owner, token, expires_at) SELECT ('filler' || i)::bytea, NULL, 1, now() FROM generate_series(1, 20000) AS i"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(testCtx(t, 30*time.Second), "ANALYZE "+b.Table()); err != nil {
		t.Fatal(err)
	}
	const keys = 12
	leases := make([]ctxlock.Lease, keys)
	for i := range leases {
		leases[i] = acquire(t, b, "k"+string(rune('a'+i)), time.Minute)
	}
	deadlocks := func() int64 {
		var n int64
		if err := pool.QueryRow(testCtx(t, 5*time.Second), "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := deadlocks()
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range 60 {
				batch := append([]ctxlock.Lease(nil), leases...)
				rng.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				var errs []error
				if g%3 == 0 {
					// A release of owners that hold nothing: it locks no
					// row, and keeps the leases for the others.
					other := make([]ctxlock.Lease, len(batch))
					for i, l := range batch {
						other[i] = ctxlock.Lease{Key: l.Key, Owner: l.Owner + "-not"}
					}
					errs = b.Release(ctx, other)
				} else {
					errs = b.Extend(ctx, batch, time.Minute)
				}
				cancel()
				for i, err := range errs {
					if err != nil {
						t.Errorf("goroutine %d, lease %q: %v", g, batch[i].Key, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if n := deadlocks() - before; n != 0 {
		t.Errorf("%d deadlocks between batches", n)
	}
	// Release and Extend of the same leases, in opposite orders.
	rev := make([]ctxlock.Lease, keys)
	for i, l := range leases {
		rev[keys-1-i] = l
	}
	var relErrs, extErrs []error
	wg.Go(func() { relErrs = b.Release(testCtx(t, 10*time.Second), leases) })
	wg.Go(func() { extErrs = b.Extend(testCtx(t, 10*time.Second), rev, time.Minute) })
	wg.Wait()
	for i := range keys {
		if relErrs[i] != nil {
			t.Errorf("release %q: %v", leases[i].Key, relErrs[i])
		}
		if err := extErrs[i]; err != nil && !errors.Is(err, ctxlock.ErrLost) {
			t.Errorf("extend %q: %v", rev[i].Key, err)
		}
	}
	if n := deadlocks() - before; n != 0 {
		t.Errorf("%d deadlocks between batches", n)
	}
}
