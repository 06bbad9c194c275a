package redlock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
)

// A TTL ≤ 0 is bad input: a permanent error matching ErrInvalidOption, and
// no node is asked.
func TestAcquireNonPositiveTTLRefused(t *testing.T) {
	c := startNodes(t, 3)
	b := newBackend(t, c.clients)
	for _, ttl := range []time.Duration{0, -time.Second} {
		req := lockReq(uniqueKey("ttl"))
		req.TTL = ttl
		if _, err := b.Acquire(context.Background(), req); !errors.Is(err, ctxlock.ErrInvalidOption) || errors.Is(err, ctxlock.ErrUnavailable) {
			t.Errorf("Acquire with TTL %v: %v; want a permanent ErrInvalidOption", ttl, err)
		}
		if _, _, _, err := b.Relock(context.Background(), ctxlock.Lease{Key: req.Key, Owner: owner(), Token: 1}, req); !errors.Is(err, ctxlock.ErrInvalidOption) {
			t.Errorf("Relock with TTL %v: %v; want ErrInvalidOption", ttl, err)
		}
		for i, h := range holders(t, c, b, req.Key) {
			if h != "" {
				t.Errorf("node %d holds the key (%q) after a refused TTL %v", i, h, ttl)
			}
		}
	}
}
