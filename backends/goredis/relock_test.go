package goredis_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// Relock takes a key again in one script when nobody wanted it, and gives
// it up (released, published, not taken) when another owner was refused.
func TestRelockAndContention(t *testing.T) {
	s := redistest.StartServer(t)
	b := newBackend(t, s.Client(t))
	other := newBackend(t, s.Client(t))
	ctx := context.Background()
	req := func(owner string) ctxlock.AcquireRequest {
		return ctxlock.AcquireRequest{Key: "r", Owner: owner, TTL: 10 * time.Second, Timeout: time.Second}
	}

	first := acquire(t, b, "r", 10*time.Second)
	second, wanted, _, err := b.Relock(ctx, first, req("second"))
	if err != nil || wanted || second.Token != first.Token+1 || second.Owner != "second" {
		t.Fatalf("Relock with nobody waiting: %+v, wanted %v, %v; want the next token for the new owner", second, wanted, err)
	}

	// Another owner is refused: the key is now wanted.
	if _, err := other.Acquire(ctx, req("other")); !errors.Is(err, ctxlock.ErrHeld) {
		t.Fatalf("other Acquire: %v, want ErrHeld", err)
	}
	ch, stop := other.Watch("r")
	defer stop()
	// A Lock call's relock (it has a waiter) yields to the owner that does
	// not queue without queueing either: nobody would tell it its turn.
	third := req("third")
	third.Waiter = "w3"
	got, wanted, queued, err := b.Relock(ctx, second, third)
	if err != nil || !wanted || queued || got != (ctxlock.Lease{}) {
		t.Fatalf("Relock of a wanted key: %+v, wanted %v, queued %v, %v; want released, not taken, not queued", got, wanted, queued, err)
	}
	lk, _, _ := b.Keys("r")
	if n, err := s.Client(t).Exists(ctx, lk+":q").Result(); err != nil || n != 0 {
		t.Fatalf("queue after a relock yielded to a refused TryLock: EXISTS = %d, %v; want none", n, err)
	}
	received(t, ch, "a relock that gave the key up")
	l, err := other.Acquire(ctx, req("other"))
	if err != nil || l.Token != second.Token+1 {
		t.Fatalf("the waiting owner's Acquire: %+v, %v; want the key with the next token", l, err)
	}

	// A relock of a lease that is gone is an acquire: here refused, and the
	// refusal marks the key wanted for its holder's release.
	if _, _, _, err := b.Relock(ctx, second, req("fourth")); !errors.Is(err, ctxlock.ErrHeld) {
		t.Fatalf("Relock while another owner holds the key: %v, want ErrHeld", err)
	}
	_, contended := other.ReleaseContended(ctx, []ctxlock.Lease{l})
	if len(contended) != 1 || !contended[0] {
		t.Fatalf("ReleaseContended after a refused relock: %v, want [true]", contended)
	}
}

// An uncontended acquire, relock and release each take their fast path,
// which runs before the queue helpers are defined: no queue command runs,
// and each script makes four calls (EXISTS among them).
func TestUncontendedScriptsSkipTheQueue(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	b := newBackend(t, c)
	ctx := context.Background()
	relock := func(l ctxlock.Lease, owner string) ctxlock.Lease {
		t.Helper()
		next, wanted, _, err := b.Relock(ctx, l, ctxlock.AcquireRequest{Key: "f", Owner: owner, TTL: 10 * time.Second, Timeout: time.Second})
		if err != nil || wanted || next.Token != l.Token+1 {
			t.Fatalf("Relock: %+v, wanted %v, %v; want the next token", next, wanted, err)
		}
		return next
	}
	// Load the scripts.
	if errs := b.Release(ctx, []ctxlock.Lease{relock(acquire(t, b, "f", 10*time.Second), "first")}); errors.Join(errs...) != nil {
		t.Fatalf("Release: %v", errs)
	}
	if err := c.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	l := acquire(t, b, "f", 10*time.Second)
	if errs := b.Release(ctx, []ctxlock.Lease{relock(l, "second")}); errors.Join(errs...) != nil {
		t.Fatalf("Release: %v", errs)
	}
	calls := commandCalls(t, c)
	if n, err := c.Exists(ctx, "{f}").Result(); err != nil || n != 0 {
		t.Fatalf("the key after Release: exists %d, %v; want gone", n, err)
	}
	if calls["evalsha"] != 3 || calls["exists"] != 3 {
		t.Errorf("server calls %v: want 3 EVALSHA, 3 EXISTS", calls)
	}
	for _, slow := range []string{"lindex", "hget", "time", "pttl"} {
		if calls[slow] != 0 {
			t.Errorf("server calls %v: %s ran, want only the fast paths", calls, slow)
		}
	}
}

// commandCalls returns the server's INFO commandstats calls by command.
func commandCalls(t testing.TB, c *redis.Client) map[string]int {
	t.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]int{}
	for line := range strings.Lines(info) {
		// cmdstat_get:calls=3,usec=...
		name, rest, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":calls=")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ",")
		calls[name], _ = strconv.Atoi(n)
	}
	return calls
}

// A relock sent again after its reply was lost (go-redis retries a command
// on a network error, MaxRetries 3 by default) finds the key held by its
// own new owner: it gets that lease back, with its token, instead of a
// refusal that would have the Manager wait for its own lease to lapse.
func TestRelockRetryAfterSuccess(t *testing.T) {
	s := redistest.StartServer(t)
	b := newBackend(t, s.Client(t))
	ctx := context.Background()
	first := acquire(t, b, "r", 10*time.Second)
	req := ctxlock.AcquireRequest{Key: "r", Owner: owner(), TTL: 10 * time.Second, Timeout: time.Second}
	second, _, _, err := b.Relock(ctx, first, req)
	if err != nil {
		t.Fatal(err)
	}
	again, wanted, _, err := b.Relock(ctx, first, req)
	if err != nil || wanted || again != second {
		t.Fatalf("the same Relock again = %+v, wanted %v, %v; want %+v back", again, wanted, err, second)
	}
}

// The same retry when the key's fence counter is gone (WithClockTokens
// counters expire; without it, a counter evicted): as acquire.lua's retry,
// it issues a new token rather than refusing the key to its own owner
// until the lease lapses.
func TestRelockRetryAfterSuccessWithoutCounter(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	for name, opts := range map[string][]goredis.Option{"plain": nil, "clock": {goredis.WithClockTokens(time.Hour)}} {
		t.Run(name, func(t *testing.T) {
			b := newBackend(t, c, opts...)
			ctx := context.Background()
			key := "rc-" + name
			first := acquire(t, b, key, 10*time.Second)
			req := ctxlock.AcquireRequest{Key: key, Owner: owner(), TTL: 10 * time.Second, Timeout: time.Second}
			second, _, _, err := b.Relock(ctx, first, req)
			if err != nil {
				t.Fatal(err)
			}
			_, fk, _ := b.Keys(key)
			if err := c.Del(ctx, fk).Err(); err != nil {
				t.Fatal(err)
			}
			again, wanted, _, err := b.Relock(ctx, first, req)
			if err != nil || wanted || again.Owner != second.Owner || again.Token == 0 {
				t.Fatalf("the same Relock again without the counter = %+v, wanted %v, %v; want the lease back with a token", again, wanted, err)
			}
		})
	}
}
