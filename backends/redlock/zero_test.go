package redlock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/redlock"
)

// The zero Backend has no nodes. Its Acquire used to report ErrHeld ("granted
// by 0 of 0 nodes"), so a Manager's Lock waited for a holder that did not
// exist until its ctx ended, and its Close panicked closing a nil channel.
func TestZeroBackend(t *testing.T) {
	var b redlock.Backend
	ctx := context.Background()
	bad := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, ctxlock.ErrInvalidOption) || errors.Is(err, ctxlock.ErrHeld) || errors.Is(err, ctxlock.ErrUnavailable) {
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
	_, err = b.Health(ctx)
	bad("Health", err)
	if ch, stop := b.Watch("k"); ch != nil {
		t.Error("Watch: a channel from a Backend without nodes")
	} else {
		stop()
	}
	if ch, stop := b.WatchWaiter("k", "w"); ch != nil {
		t.Error("WatchWaiter: a channel from a Backend without nodes")
	} else {
		stop()
	}
	if lk, _, _ := b.Keys("k"); lk != "{k}" {
		t.Errorf("Keys: %q", lk)
	}

	m := ctxlock.NewManager(&b)
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
}
