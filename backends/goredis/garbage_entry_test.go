package goredis_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// A queue entry whose metadata part does not start with the NUL separator
// (garbage: the scripts only write "" or "\x00..." there) must not change
// the token a grant reads back: a hand-off writes "<waiter>:<token><meta>",
// and meta "7" would turn token 2 into 27, above the key's fencing counter,
// so that the next holder's token would go backwards.
func TestGarbageEntryMetadataKeepsTokens(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	ctx := context.Background()
	b := newBackend(t, c)
	lk, fk, _ := b.Keys("gm")
	holder := acquire(t, b, "gm", 10*time.Second)
	far := fmt.Sprint(time.Now().Add(time.Hour).UnixMilli())
	if err := c.RPush(ctx, lk+":q", "w1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.HSet(ctx, lk+":qd", "w1", far+" 10000 "+b.Inbox()+" 7").Err(); err != nil {
		t.Fatal(err)
	}
	if errs := b.Release(ctx, []ctxlock.Lease{holder}); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	fence, _ := c.Get(ctx, fk).Uint64()
	l, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: "gm", Owner: owner(), TTL: 10 * time.Second, Timeout: time.Second, Waiter: "w1"})
	if err != nil {
		t.Fatalf("Acquire of the granted waiter: %v", err)
	}
	if l.Token != fence {
		t.Fatalf("granted lease has token %d; the fencing counter is %d", l.Token, fence)
	}
	if errs := b.Release(ctx, []ctxlock.Lease{l}); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	next := acquire(t, b, "gm", 10*time.Second)
	if next.Token <= l.Token {
		t.Fatalf("token %d after %d", next.Token, l.Token)
	}
}
