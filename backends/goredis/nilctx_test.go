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

// Every call given a nil context fails with ErrNilContext instead of
// panicking inside go-redis (a nil pointer dereference).
func TestNilContext(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	defer c.Close()
	for _, hints := range []bool{false, true} {
		var opts []goredis.Option
		if hints {
			opts = append(opts, goredis.WithWaiterHints(0))
		}
		b := newBackend(t, c, opts...)
		var ctx context.Context // nil is the point
		check := func(op string, err error) {
			t.Helper()
			if !errors.Is(err, ctxlock.ErrNilContext) {
				t.Errorf("hints %v: %s(nil ctx): %v; want ErrNilContext", hints, op, err)
			}
		}
		req := ctxlock.AcquireRequest{Key: "k", Owner: "o", Waiter: "w", TTL: time.Second, Timeout: time.Second}
		lease := ctxlock.Lease{Key: "k", Owner: "o", Token: 1}
		_, err := b.Acquire(ctx, req)
		check("Acquire", err)
		_, _, _, err = b.Relock(ctx, lease, req)
		check("Relock", err)
		other := req
		other.Key = "k2"
		_, _, _, err = b.Relock(ctx, lease, other)
		check("Relock of another key", err)
		check("Extend", b.Extend(ctx, []ctxlock.Lease{lease}, time.Second)[0])
		check("Release", b.Release(ctx, []ctxlock.Lease{lease})[0])
		errs, _ := b.ReleaseContended(ctx, []ctxlock.Lease{lease})
		check("ReleaseContended", errs[0])
		check("Leave", b.Leave(ctx, "k", "w"))
		check("Dequeue", b.Dequeue(ctx, "k", "w"))
		check("Requeue", b.Requeue(ctx, lease, "w", time.Second))
		_, err = b.Health(ctx)
		check("Health", err)
	}
}
