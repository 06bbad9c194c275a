package goredis_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/faultproxy"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// An acquire that times out on the client while its request is still in the
// network (delayed by the proxy; go-redis drops the connection) is released
// at once on a fresh connection, which finds nothing. The request then
// reaches the server and takes the key for an owner nobody will release.
// The Manager repeats that release until the lease would have lapsed, so
// that another process gets the key soon after the straggler landed, not a
// TTL (10s) later; and its Close does not wait for those repeats.
func TestStragglingAcquireDoesNotBlockKeyForTTL(t *testing.T) {
	const (
		ttl     = 10 * time.Second
		timeout = 200 * time.Millisecond
		late    = 1500 * time.Millisecond
	)
	s := redistest.StartServer(t)
	ctx := context.Background()
	direct := s.Client(t)
	// Load the scripts, so that the late request is the acquire itself
	// (EVALSHA), not one the server refuses with NOSCRIPT.
	warm := newBackend(t, direct)
	if errs := warm.Release(ctx, []ctxlock.Lease{acquire(t, warm, "warm", time.Second)}); errs[0] != nil {
		t.Fatal(errs[0])
	}

	// The Manager's client: its one pooled pipeline connection (the
	// backend's calls are pipelines) goes through the proxy, every later
	// one (after the timeout dropped it) straight to the server.
	p := faultproxy.Start(t, s.Addr())
	route := &routeDials{}
	c := s.Client(t)
	c.AddHook(route)
	pa := p.Addr()
	route.addr.Store(&pa)
	if _, err := c.Pipelined(ctx, func(pipe redis.Pipeliner) error { return pipe.Ping(ctx).Err() }); err != nil {
		t.Fatal(err)
	}
	b := newBackend(t, c)
	m := ctxlock.NewManager(b)
	defer m.Close(ctx)

	p.Delay(late, 0)
	sent := time.Now()
	ok, _, err := m.NewLock("k", ctxlock.WithTTL(ttl), ctxlock.WithAcquireTimeout(timeout)).TryLock(ctx)
	if ok || !errors.Is(err, ctxlock.ErrUnavailable) {
		t.Fatalf("TryLock = %v, %v; want a timed-out attempt", ok, err)
	}

	// Wait for the late acquire to take the key.
	lk, _, _ := b.Keys("k")
	for {
		n, err := direct.Exists(ctx, lk).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Since(sent) > late+5*time.Second {
			t.Fatal("the delayed acquire never reached the server")
		}
		time.Sleep(5 * time.Millisecond) // polling the server for the straggler
	}
	if pttl, _ := direct.PTTL(ctx, lk).Result(); pttl < ttl-time.Second {
		t.Fatalf("the late acquire's lease has %v left; want about %v", pttl, ttl)
	}

	other := ctxlock.NewManager(newBackend(t, s.Client(t)))
	defer other.Close(ctx)
	lctx, cancel := context.WithTimeout(ctx, ttl/2)
	defer cancel()
	if _, err := other.NewLock("k").Lock(lctx); err != nil {
		t.Fatalf("another owner waited %v for the key the straggler took: %v", time.Since(sent), err)
	}

	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := m.Close(cctx); err != nil {
		t.Fatalf("Close: %v (it must not wait for the repeated releases)", err)
	}
}
