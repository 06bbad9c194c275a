package goredis_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// Relock takes a key again in one script when nobody wanted it, and gives
// it up (released, published, not taken) when another owner was refused.
func TestRelockAndContention(t *testing.T) {
	s := redistest.StartServer(t)
	b := newBackend(t, s.Client(t))
	other := newBackend(t, s.Client(t))
	ctx := context.Background()
	req := func(owner string) ctxlock.AcquireRequest {
		return ctxlock.AcquireRequest{Key: "r", Owner: owner, TTL: 10 * time.Second, Timeout: time.Second}
	}

	first := acquire(t, b, "r", 10*time.Second)
	second, wanted, err := b.Relock(ctx, first, req("second"))
	if err != nil || wanted || second.Token != first.Token+1 || second.Owner != "second" {
		t.Fatalf("Relock with nobody waiting: %+v, wanted %v, %v; want the next token for the new owner", second, wanted, err)
	}

	// Another owner is refused: the key is now wanted.
	if _, err := other.Acquire(ctx, req("other")); !errors.Is(err, ctxlock.ErrHeld) {
		t.Fatalf("other Acquire: %v, want ErrHeld", err)
	}
	ch, stop := other.Watch("r")
	defer stop()
	got, wanted, err := b.Relock(ctx, second, req("third"))
	if err != nil || !wanted || got != (ctxlock.Lease{}) {
		t.Fatalf("Relock of a wanted key: %+v, wanted %v, %v; want released, not taken", got, wanted, err)
	}
	received(t, ch, "a relock that gave the key up")
	l, err := other.Acquire(ctx, req("other"))
	if err != nil || l.Token != second.Token+1 {
		t.Fatalf("the waiting owner's Acquire: %+v, %v; want the key with the next token", l, err)
	}

	// A relock of a lease that is gone is an acquire: here refused, and the
	// refusal marks the key wanted for its holder's release.
	if _, _, err := b.Relock(ctx, second, req("fourth")); !errors.Is(err, ctxlock.ErrHeld) {
		t.Fatalf("Relock while another owner holds the key: %v, want ErrHeld", err)
	}
	_, contended := other.ReleaseContended(ctx, []ctxlock.Lease{l})
	if len(contended) != 1 || !contended[0] {
		t.Fatalf("ReleaseContended after a refused relock: %v, want [true]", contended)
	}
}
