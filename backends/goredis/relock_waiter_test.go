package goredis_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// Relocker's contract: unless the key was wanted while old held it, Relock
// "returns what Acquire would". When old no longer owns the key (its lease
// lapsed, or it is the lease of an ambiguous attempt the Manager releases),
// and a release has meanwhile granted the key to req.Waiter, Acquire returns
// the grant; Relock must too. It used to return a HeldError whose Fence
// equals the grant's token, which also made the Manager drop the grant's
// Handoff as stale (Token <= Fence of a later refusal).
func TestRelockReturnsGrantToItsWaiter(t *testing.T) {
	s := redistest.StartServer(t)
	b := newBackend(t, s.Client(t))
	ctx := context.Background()

	holder := acquire(t, b, "q", 10*time.Second)
	mustRefuse(t, b, "w1") // w1 queues
	turns, stop := b.WatchWaiter("q", "w1")
	defer stop()
	drain(turns)
	if errs := b.Release(ctx, []ctxlock.Lease{holder}); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	h := granted(t, turns, "the holder's release (w1 is first)")

	// A lease w1's Lock call no longer owns (say, an attempt that timed out):
	// the Manager passes it to Relock together with w1's next attempt.
	gone := ctxlock.Lease{Key: "q", Owner: owner()}
	l, wanted, _, err := b.Relock(ctx, gone, waitReq("w1"))
	if err != nil || wanted || l.Owner != ctxlock.GrantOwner("w1", h.Token) || l.Token != h.Token {
		var he *ctxlock.HeldError
		if errors.As(err, &he) {
			t.Logf("refusal: Remaining %v, Fence %d (grant token %d)", he.Remaining, he.Fence, h.Token)
		}
		t.Fatalf("Relock by w1 with the key granted to w1 = %+v, wanted %v, %v; want the grant (owner %q, token %d), as Acquire returns",
			l, wanted, err, ctxlock.GrantOwner("w1", h.Token), h.Token)
	}
}

// Same contract: a free key (its lease lapsed unreleased) whose first live
// waiter is req.Waiter is taken by Acquire, and by Relock. Relock used to
// refuse it (PTTL 0, "kept for an earlier waiter"), so the key stayed free,
// and refused to everyone else, until w1's next plain attempt (up to
// ctxlock.MaxRetryDelay later).
func TestRelockByFirstWaiterTakesFreeKey(t *testing.T) {
	s := redistest.StartServer(t)
	b := newBackend(t, s.Client(t))
	ctx := context.Background()

	holder := acquire(t, b, "q", 10*time.Second)
	mustRefuse(t, b, "w1")
	mustRefuse(t, b, "w2")
	lapse(t, s, b, "q") // the holder's lease ends unreleased

	l, wanted, _, err := b.Relock(ctx, holder, waitReq("w1"))
	if err != nil || wanted || l.Owner == "" {
		t.Fatalf("Relock by w1, first in line, of a free key = %+v, wanted %v, %v; want the key (Acquire takes it)", l, wanted, err)
	}
}

// WaiterQueue's contract: a refused Acquire with a Waiter joins the key's
// queue, and Relock "returns what Acquire would" when old no longer holds
// the key. A refused Relock must queue req.Waiter too (and say so), or the
// Lock call loses its place to every waiter refused before its next plain
// attempt, a retry delay later: w1, refused first, must be granted the key
// before w2, refused after it.
func TestRefusedRelockQueuesItsWaiter(t *testing.T) {
	s := redistest.StartServer(t)
	b := newBackend(t, s.Client(t))
	ctx := context.Background()

	holder := acquire(t, b, "q", 10*time.Second)
	gone := ctxlock.Lease{Key: "q", Owner: owner()} // w1's own lease, lapsed
	_, wanted, queued, err := b.Relock(ctx, gone, waitReq("w1"))
	if !errors.Is(err, ctxlock.ErrHeld) || wanted {
		t.Fatalf("Relock by w1 of a key held by another owner: wanted %v, %v; want refused (ErrHeld)", wanted, err)
	}
	if !queued {
		t.Errorf("refused Relock by w1 reports queued false; a refused Acquire queues its waiter")
	}
	mustRefuse(t, b, "w2")
	ch1, stop1 := b.WatchWaiter("q", "w1")
	defer stop1()
	ch2, stop2 := b.WatchWaiter("q", "w2")
	defer stop2()
	drain(ch1, ch2)
	if errs := b.Release(ctx, []ctxlock.Lease{holder}); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	select {
	case h := <-ch1:
		if h.Token == 0 {
			t.Fatalf("w1 was told %+v, want a grant", h)
		}
	case h := <-ch2:
		t.Fatalf("w2 (refused after w1) was told %+v first; w1 lost its place", h)
	case <-time.After(waitLong):
		t.Fatal("no grant after the release")
	}
}
