package memory_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// A refused Acquire marks the key wanted for the rest of the holder's lease,
// not beyond it (the Redis backend's wanted mark has the lease's remaining
// TTL). Once the lease has lapsed, nobody is kept waiting by it: a Relock of
// the lapsed lease takes the free key, and its release reports no
// contention.
func TestWantedMarkLapsesWithLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		b := memory.New()
		defer b.Close()
		req := func(owner string) ctxlock.AcquireRequest {
			return ctxlock.AcquireRequest{Key: "k", Owner: owner, TTL: time.Second, Timeout: time.Second}
		}
		old, err := b.Acquire(ctx, req("a"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Acquire(ctx, req("b")); !errors.Is(err, ctxlock.ErrHeld) {
			t.Fatalf("second Acquire: %v, want ErrHeld", err)
		}
		time.Sleep(2 * time.Second) // the lease of "a" lapses; "b" gave up

		lease, wanted, _, err := b.Relock(ctx, old, req("c"))
		if err != nil || wanted || lease.Owner != "c" {
			t.Fatalf("Relock of a lapsed lease = %+v, wanted %v, %v; want the free key taken", lease, wanted, err)
		}
	})
}

func TestReleaseOfLapsedLeaseNotContended(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		b := memory.New()
		defer b.Close()
		old, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: "k", Owner: "a", TTL: time.Second, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: "k", Owner: "b", TTL: time.Second, Timeout: time.Second}); !errors.Is(err, ctxlock.ErrHeld) {
			t.Fatalf("second Acquire: %v, want ErrHeld", err)
		}
		time.Sleep(2 * time.Second)
		errs, contended := b.ReleaseContended(ctx, []ctxlock.Lease{old})
		if errs[0] != nil || (len(contended) > 0 && contended[0]) {
			t.Fatalf("release of a lapsed lease: err %v, contended %v; want nil, not contended", errs[0], contended)
		}
	})
}
