package goredis_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// Fencing tokens go through Lua numbers, which are doubles: exact up to
// 2^53. A counter seeded near it (from a clock, say) gives exact tokens up
// to 2^53 − 1, and past that the acquire fails, permanently and saying why,
// before it stores a lease: tokens never repeat.
func TestTokensStopBefore2p53(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	b := newBackend(t, c)
	ctx := context.Background()
	lk, fence, _ := b.Keys("big")
	if err := c.Set(ctx, fence, strconv.FormatUint(1<<53-2, 10), 0).Err(); err != nil {
		t.Fatal(err)
	}
	l := acquire(t, b, "big", 10*time.Second)
	if l.Token != 1<<53-1 {
		t.Fatalf("token %d, want %d", l.Token, uint64(1<<53-1))
	}
	if errs := b.Release(ctx, []ctxlock.Lease{l}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	_, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: "big", Owner: owner(), TTL: 10 * time.Second, Timeout: time.Second})
	if err == nil || errors.Is(err, ctxlock.ErrUnavailable) || !strings.Contains(err.Error(), "2^53") {
		t.Fatalf("Acquire with the counter at 2^53 = %v; want a permanent error naming the limit", err)
	}
	if n, err := c.Exists(ctx, lk).Result(); err != nil || n != 0 {
		t.Fatalf("the failed acquire left a lease (EXISTS %d, %v)", n, err)
	}
}

// A hand-off with a token of 15 digits or more: Lua writes such numbers as
// "1e+14" unless told otherwise, which made the grant's owner and message
// unparseable (the waiter dequeued, never told, refused by its own grant).
func TestHandOffWithFifteenDigitToken(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	b := newBackend(t, c)
	_, fence, _ := b.Keys("q")
	if err := c.Set(context.Background(), fence, "99999999999998", 0).Err(); err != nil {
		t.Fatal(err)
	}
	handOffToW1(t, b, c)
}

// handOffToW1 has a release of key "q" hand it to waiter w1, and checks that
// w1 is told (with the grant's token) and takes the key up with its
// Acquire.
func handOffToW1(t *testing.T, b *goredis.Backend, c *redis.Client) {
	t.Helper()
	ctx := context.Background()
	holder := acquire(t, b, "q", 10*time.Second)
	mustRefuse(t, b, "w1")
	ch, stop := b.WatchWaiter("q", "w1")
	defer stop()
	drain(ch)
	if errs := b.Release(ctx, []ctxlock.Lease{holder}); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	h := granted(t, ch, "the release (w1 is first)")
	lk, _, _ := b.Keys("q")
	v, _ := c.Get(ctx, lk).Result()
	l, err := b.Acquire(ctx, waitReq("w1"))
	if err != nil || l.Owner != v || l.Token != h.Token || l.Token != holder.Token+1 {
		t.Fatalf("w1's Acquire after the release that granted it the key = %+v, %v; want owner %q (stored), token %d (told %d)", l, err, v, holder.Token+1, h.Token)
	}
}

// OOM under noeviction (the policy the package docs recommend for the
// fence counters) means "not now": the server refuses writes until keys
// expire. It is transient, so a Lock retries instead of failing at once.
func TestOOMIsTransient(t *testing.T) {
	s := redistest.StartServer(t, redistest.WithArgs("--maxmemory-policy", "noeviction"))
	c := s.Client(t)
	b := newBackend(t, c)
	ctx := context.Background()
	if err := c.Set(ctx, "ballast", strings.Repeat("x", 4<<20), 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ConfigSet(ctx, "maxmemory", "2mb").Err(); err != nil {
		t.Fatal(err)
	}
	_, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: "oom", Owner: owner(), TTL: time.Second, Timeout: time.Second})
	if !errors.Is(err, ctxlock.ErrUnavailable) {
		t.Fatalf("Acquire on a server out of memory: %v; want a transient error (ErrUnavailable)", err)
	}
}

// The inbox's name, stored between spaces in queue entries, has no white
// space even when the key prefix has: a prefix with a space sent grants to
// the wrong channel and corrupted the grant's owner.
func TestKeyPrefixWithSpaceHandsOff(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	handOffToW1(t, newBackend(t, c, goredis.WithKeyPrefix("my app:")), c)
}

// A garbage token (a negative counter) fails the acquire permanently, and
// the lease its script stored is given back: the Manager releases nothing
// after a permanent error, so it would have kept the key for its TTL.
func TestGarbageTokenGivesLeaseBack(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	b := newBackend(t, c)
	ctx := context.Background()
	lk, fence, _ := b.Keys("neg")
	if err := c.Set(ctx, fence, "-5", 0).Err(); err != nil {
		t.Fatal(err)
	}
	req := ctxlock.AcquireRequest{Key: "neg", Owner: owner(), TTL: 10 * time.Second, Timeout: time.Second}
	_, err := b.Acquire(ctx, req)
	if err == nil {
		t.Fatal("Acquire with a negative counter succeeded")
	}
	if v, _ := c.Get(ctx, lk).Result(); v == req.Owner {
		pttl, _ := c.PTTL(ctx, lk).Result()
		t.Fatalf("Acquire failed permanently (%v, unavailable=%v) but left its lease stored: %q, PTTL %v", err, errors.Is(err, ctxlock.ErrUnavailable), v, pttl)
	}
}
