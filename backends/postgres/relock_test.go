package postgres_test

import (
	"errors"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/postgres"
	"github.com/ctxlock/ctxlock/internal/pgtest"
)

// Relock hands a key its old owner still holds to the new owner in one
// step, with a greater token; yields it when another owner was refused
// meanwhile; and acquires afresh when the old lease is gone.
func TestRelock(t *testing.T) {
	s := pgtest.Start(t)
	pool := s.Pool(t)
	b := newBackend(t, pool, postgres.WithTable(randomName("relock")))
	ctx := testCtx(t, 30*time.Second)
	req := func() ctxlock.AcquireRequest {
		return ctxlock.AcquireRequest{Key: "k", Owner: owner(), TTL: 10 * time.Second, Timeout: 5 * time.Second}
	}
	ownerOf := func() string {
		var o []byte
		if err := pool.QueryRow(ctx, "SELECT owner FROM "+b.Table()+" WHERE key = 'k'").Scan(&o); err != nil {
			t.Fatal(err)
		}
		return string(o)
	}

	t.Run("held and unwanted: handed over", func(t *testing.T) {
		old := acquire(t, b, "k", 10*time.Second)
		r := req()
		l, wanted, queued, err := b.Relock(ctx, old, r)
		if err != nil || wanted || queued {
			t.Fatalf("Relock = %+v, %v, %v, %v", l, wanted, queued, err)
		}
		if l.Owner != r.Owner || l.Key != "k" || l.Token <= old.Token {
			t.Fatalf("Relock lease %+v; want owner %q and a token above %d", l, r.Owner, old.Token)
		}
		if got := ownerOf(); got != r.Owner {
			t.Fatalf("row owner %q; want %q", got, r.Owner)
		}
		if errs := b.Extend(ctx, []ctxlock.Lease{old}, time.Second); !errors.Is(errs[0], ctxlock.ErrLost) {
			t.Fatalf("Extend of the old lease: %v; want ErrLost", errs[0])
		}
		release(t, b, l)
	})

	t.Run("wanted: released, not taken", func(t *testing.T) {
		old := acquire(t, b, "k", 10*time.Second)
		if _, err := b.Acquire(ctx, req()); !errors.Is(err, ctxlock.ErrHeld) {
			t.Fatalf("Acquire by another owner: %v; want ErrHeld", err)
		}
		watch, stop := b.Watch("k")
		defer stop()
		// The listener's first LISTEN wakes every watcher: wait for it, so
		// that only a notification can wake this one.
		pollUntil(t, 10*time.Second, "the listener", func() bool { return healthy(t, b) })
		drain(watch)
		l, wanted, queued, err := b.Relock(ctx, old, req())
		if err != nil || !wanted || queued || l != (ctxlock.Lease{}) {
			t.Fatalf("Relock of a wanted key = %+v, %v, %v, %v; want wanted, no lease", l, wanted, queued, err)
		}
		if got := ownerOf(); got != "" {
			t.Fatalf("row owner %q after a yielding Relock; want none", got)
		}
		select {
		case <-watch:
		case <-time.After(10 * time.Second):
			t.Fatal("the yielding Relock did not notify the key's watchers")
		}
		w := acquire(t, b, "k", 10*time.Second) // the waiter takes it
		if w.Token <= old.Token {
			t.Fatalf("waiter's token %d; want above %d", w.Token, old.Token)
		}
		release(t, b, w)
	})

	t.Run("old lease gone: acquired afresh", func(t *testing.T) {
		old := acquire(t, b, "k", 10*time.Second)
		release(t, b, old)
		r := req()
		l, wanted, _, err := b.Relock(ctx, old, r)
		if err != nil || wanted || l.Owner != r.Owner || l.Token <= old.Token {
			t.Fatalf("Relock after the old lease was released = %+v, %v, %v", l, wanted, err)
		}
		release(t, b, l)
	})

	t.Run("taken by another owner: refused", func(t *testing.T) {
		old := acquire(t, b, "k", 10*time.Second)
		release(t, b, old)
		other := acquire(t, b, "k", 10*time.Second)
		_, _, _, err := b.Relock(ctx, old, req())
		var held *ctxlock.HeldError
		if !errors.As(err, &held) || held.Remaining <= 5*time.Second {
			t.Fatalf("Relock of a key another owner holds: %v; want a HeldError with about 10s remaining", err)
		}
		if got := ownerOf(); got != other.Owner {
			t.Fatalf("row owner %q; want the other owner's %q", got, other.Owner)
		}
		release(t, b, other)
	})
}
