package goredis

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// After Close, with WithReplicaAcks, a call still returns when its ctx's
// deadline passes, as it does before Close and as it does after Close
// without WithReplicaAcks: it ran bounded by its timeout only.
func TestAcquireAfterCloseWithAcksHonoursCtxDeadline(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t, func(o *redis.Options) { o.ReadTimeout = time.Minute })
	b := New(c, WithReplicaAcks(1, 10*time.Millisecond))
	ctx := context.Background()
	key := "closed/" + t.Name()
	// Not acknowledged (no replica), but the script is cached.
	_, _ = b.Acquire(ctx, ctxlock.AcquireRequest{Key: key + "/warm", Owner: "w", TTL: time.Minute, Timeout: time.Second})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	t.Cleanup(s.Cont)
	actx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := b.Acquire(actx, ctxlock.AcquireRequest{Key: key, Owner: "o", TTL: time.Minute, Timeout: time.Minute})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Acquire on a frozen server succeeded")
		}
	case <-time.After(batchWait):
		t.Fatalf("Acquire on a frozen server still running %v after its ctx's deadline (100ms) passed", batchWait)
	}
}
