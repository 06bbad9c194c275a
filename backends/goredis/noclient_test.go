package goredis_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
)

// A Backend without a client (the zero Backend, or New with a nil client)
// fails every call with a clear error: it used to panic on a nil pointer,
// New(nil) in the batcher's goroutine, which no caller can recover.
func TestBackendWithoutClient(t *testing.T) {
	var nilClient *redis.Client
	for name, mk := range map[string]func() *goredis.Backend{
		"zero":         func() *goredis.Backend { return new(goredis.Backend) },
		"nil client":   func() *goredis.Backend { return goredis.New(nil) },
		"typed nil":    func() *goredis.Backend { return goredis.New(nilClient) },
		"nil w/ hints": func() *goredis.Backend { return goredis.New(nil, goredis.WithWaiterHints(0)) },
	} {
		t.Run(name, func(t *testing.T) {
			b := mk()
			ctx := context.Background()
			bad := func(op string, err error) {
				t.Helper()
				if !errors.Is(err, ctxlock.ErrInvalidOption) || errors.Is(err, ctxlock.ErrUnavailable) {
					t.Errorf("%s: %v; want a permanent ErrInvalidOption", op, err)
				}
			}
			req := ctxlock.AcquireRequest{Key: "k", Owner: "o", Waiter: "w", TTL: time.Second, Timeout: time.Second}
			lease := ctxlock.Lease{Key: "k", Owner: "o", Token: 1}
			_, err := b.Acquire(ctx, req)
			bad("Acquire", err)
			_, _, _, err = b.Relock(ctx, lease, req)
			bad("Relock", err)
			bad("Extend", b.Extend(ctx, []ctxlock.Lease{lease}, time.Second)[0])
			bad("Release", b.Release(ctx, []ctxlock.Lease{lease})[0])
			bad("Leave", b.Leave(ctx, "k", "w"))
			bad("Dequeue", b.Dequeue(ctx, "k", "w"))
			bad("Requeue", b.Requeue(ctx, lease, "w", time.Second))
			_, err = b.Health(ctx)
			bad("Health", err)
			if ch, stop := b.Watch("k"); ch != nil {
				t.Error("Watch: a channel from a Backend without a client")
			} else {
				stop()
			}
			if ch, stop := b.WatchWaiter("k", "w"); ch != nil {
				t.Error("WatchWaiter: a channel from a Backend without a client")
			} else {
				stop()
			}
			if b.AfterRoundTrip(func() {}) {
				t.Error("AfterRoundTrip: true without a client")
			}
			// Through a Manager: Lock fails at once with the same error.
			m := ctxlock.NewManager(b)
			lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, err = m.NewLock("k").Lock(lctx)
			bad("Manager Lock", err)
			if err := m.Close(ctx); err != nil {
				t.Errorf("Manager Close: %v", err)
			}
			for range 2 {
				if err := b.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}
		})
	}
}
