package goredis

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// A Leave (or Dequeue) whose ctx ends while it waits for a straggling
// Acquire of its waiter on the key did not happen at all, and nothing
// took it up again once the straggler was answered: the straggler queued
// the waiter after it, so the waiter kept its place (and the next release
// would hand the key to a waiter nobody listens for, blocking it for the
// grant's TTL). Release does it again in that case (releaseAfter); Leave
// and Dequeue must too.
func TestLeaveAgainAfterStraggler(t *testing.T) {
	for _, op := range []string{"leave", "dequeue"} {
		t.Run(op, func(t *testing.T) {
			s := redistest.StartServer(t)
			c := s.Client(t)
			b := New(c)
			key, ctx := "settle/"+t.Name(), context.Background()
			holder := ctxlock.AcquireRequest{Key: key, Owner: "holder", TTL: time.Minute, Timeout: time.Second}
			if _, err := b.Acquire(ctx, holder); err != nil {
				t.Fatal(err) // held, and the script is cached
			}
			h := redistest.NewHoldNextPipeline(t)
			c.AddHook(h)

			actx, cancel := context.WithCancel(ctx)
			go func() {
				<-h.Reached() // sent: held before the server
				cancel()
			}()
			req := ctxlock.AcquireRequest{Key: key, Owner: "abandoned", Waiter: "w", TTL: time.Minute, Timeout: time.Minute}
			if _, err := b.Acquire(actx, req); !errors.Is(err, context.Canceled) {
				h.Let()
				t.Fatalf("Acquire given up while in flight: %v", err)
			}
			lctx, lcancel := context.WithCancel(ctx)
			b.batch.settleWaits = lcancel // the Leave's ctx ends while it waits
			if op == "leave" {
				_ = b.Leave(lctx, key, "w")
			} else {
				_ = b.Dequeue(lctx, key, "w")
			}
			h.Let()
			_ = b.Close() // waits for the straggler's batch, and what runs after it
			q, err := c.LRange(ctx, b.lockKey(key)+queueSuffix, 0, -1).Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range q {
				if w == "w" {
					t.Fatalf("after the %s and the straggler the queue is %q: the straggler queued the waiter after the %s, which was not sent again", op, q, op)
				}
			}
		})
	}
}
