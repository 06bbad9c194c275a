package goredis

import (
	"context"
	"errors"
	"runtime"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// A Release whose ctx ends while it waits for a straggling Acquire on its
// key releases again once the straggler is answered (releaseAfter). While
// Close waits for that straggler's batch, the release again was dropped
// (batcher.later refuses once closed): the straggler took the lease after
// the release and kept it for its TTL.
func TestReleaseAgainWhileClosing(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	b := New(c)
	key, ctx := "settle/"+t.Name(), context.Background()
	h, req := abandonAcquireInFlight(t, b, c, key)
	closed := make(chan struct{})
	go func() { _ = b.Close(); close(closed) }()
	for { // Close waits for the straggler's batch
		b.batch.mu.Lock()
		c := b.batch.closed
		b.batch.mu.Unlock()
		if c {
			break
		}
		runtime.Gosched()
	}
	rctx, rcancel := context.WithCancel(ctx)
	b.batch.settleWaits = rcancel // the Release's ctx ends while it waits
	_ = b.Release(rctx, []ctxlock.Lease{{Key: key, Owner: req.Owner}})
	h.Let()
	<-closed
	if v, err := c.Get(ctx, b.lockKey(key)).Result(); !errors.Is(err, redis.Nil) {
		t.Fatalf("after Release and Close the key holds %q (%v): the abandoned acquire ran after the release, which was not sent again", v, err)
	}
}
