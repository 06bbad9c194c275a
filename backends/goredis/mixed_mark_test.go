package goredis_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// A release that frees a wanted key without a hand-off tells the waiter
// that can take the key: with a granting queue ("{K}:q") that is its first
// waiter, whoever was refused last (a later waiter of that queue, or a
// TryLock). Telling a later waiter woke one that is refused the free key
// (it is kept for the first), while the first slept until its retry, up to
// ctxlock.MaxRetryDelay, and a holder of the other kind re-locking in a
// loop took the key back meanwhile. With hints ("{K}:hq") anyone may take
// a free key that no hint keeps, so a waiting caller names itself, and a
// TryLock names the queue's first waiter.
func TestMixedHintsMarkNamesWhoCanTakeTheKey(t *testing.T) {
	hints := []goredis.Option{goredis.WithWaiterHints(time.Minute)}
	for _, tc := range []struct {
		name           string
		holder, waiter []goredis.Option
		later          string // refused after w1: another waiter, or "" (a TryLock)
	}{
		{"granting waiters, second refused last", hints, nil, "w2"},
		{"granting waiter, TryLock refused last", hints, nil, ""},
		{"hinting waiter, TryLock refused last", nil, hints, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := redistest.StartServer(t)
			holding := newBackend(t, s.Client(t), tc.holder...)
			waiting := newBackend(t, s.Client(t), tc.waiter...)
			ctx := context.Background()
			holder := acquire(t, holding, "q", 10*time.Second)
			mustRefuse(t, waiting, "w1")
			mustRefuse(t, waiting, tc.later)
			ch1, stop := waiting.WatchWaiter("q", "w1")
			defer stop()
			drain(ch1)

			if errs := holding.Release(ctx, []ctxlock.Lease{holder}); errors.Join(errs...) != nil {
				t.Fatal(errs)
			}
			hinted(t, ch1, "a release of the other kind (w1 can take the key)")
			if _, err := waiting.Acquire(ctx, waitReq("w1")); err != nil {
				t.Fatalf("w1's retry: %v; want the key", err)
			}
		})
	}
}

// A string in "{K}:wanted" that is no mark of this package (garbage, not
// "<inbox> <waiter>" with an inbox of a Backend) tells nobody: with the
// ACL the package documents, publishing on its first word as a channel
// failed the release script after it had freed the key, so Release
// reported an error for a released lease.
func TestGarbageMarkTellsNobody(t *testing.T) {
	s := redistest.StartServer(t)
	admin := s.Client(t)
	ctx := context.Background()
	if err := admin.Do(ctx, append([]any{"ACL", "SETUSER", "locker"}, anys(minimalACL)...)...).Err(); err != nil {
		t.Fatal(err)
	}
	c := s.Client(t, func(o *redis.Options) { o.Username, o.Password = "locker", "pw" })
	for _, hints := range []bool{false, true} {
		var opts []goredis.Option
		if hints {
			opts = append(opts, goredis.WithWaiterHints(time.Minute))
		}
		b := newBackend(t, c, opts...)
		lk, _, _ := b.Keys("q")
		for _, mark := range []string{"some garbage", "foo:inbox:1 w1", "\x00 \x00"} {
			l := acquire(t, b, "q", 10*time.Second)
			if err := admin.Set(ctx, lk+":wanted", mark, time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			if errs := b.Release(ctx, []ctxlock.Lease{l}); errors.Join(errs...) != nil {
				t.Fatalf("hints %v: Release with the wanted mark %q: %v; want released", hints, mark, errs)
			}
			if v := lockValue(t, s, b, "q"); v != "" {
				t.Fatalf("hints %v: key after the release holds %q", hints, v)
			}
		}
	}
}
