package redlock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/redlock"
)

// Every call given a nil context fails with ErrNilContext. It used to
// panic in a node goroutine (context.WithTimeout of a nil parent), which
// no caller can recover: the whole process died.
func TestNilContext(t *testing.T) {
	var clients []redis.UniversalClient
	for _, addr := range []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"} { // never dialled
		c := redis.NewClient(&redis.Options{Addr: addr})
		defer c.Close()
		clients = append(clients, c)
	}
	b, err := redlock.New(clients)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var ctx context.Context // nil is the point
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, ctxlock.ErrNilContext) {
			t.Errorf("%s(nil ctx): %v; want ErrNilContext", op, err)
		}
	}
	req := ctxlock.AcquireRequest{Key: "k", Owner: "o", Waiter: "w", TTL: time.Second, Timeout: time.Second}
	lease := ctxlock.Lease{Key: "k", Owner: "o", Token: 1}
	_, err = b.Acquire(ctx, req)
	check("Acquire", err)
	_, _, _, err = b.Relock(ctx, lease, req)
	check("Relock", err)
	other := req
	other.Key = "k2"
	_, _, _, err = b.Relock(ctx, lease, other)
	check("Relock of another key", err)
	check("Extend", b.Extend(ctx, []ctxlock.Lease{lease}, time.Second)[0])
	check("Release", b.Release(ctx, []ctxlock.Lease{lease})[0])
	check("Leave", b.Leave(ctx, "k", "w"))
	_, err = b.Health(ctx)
	check("Health", err)
}
