package goredis_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// hinted waits for a hint (a zero Handoff) on ch; a grant fails the test.
func hinted(t *testing.T, ch <-chan ctxlock.Handoff, what string) {
	t.Helper()
	select {
	case h := <-ch:
		if h.Token != 0 {
			t.Fatalf("after %s: a grant %+v; WithWaiterHints must only hint", what, h)
		}
	case <-time.After(waitLong):
		t.Fatalf("no hint after %s within %v", what, waitLong)
	}
}

// queueLen returns the length of key's waiter queue on b's server.
func queueLen(t *testing.T, s *redistest.Server, b *goredis.Backend, key string) int64 {
	t.Helper()
	lk, _, _ := b.Keys(key)
	n, err := s.Client(t).LLen(context.Background(), lk+":q").Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// With WithWaiterHints a release tells the first waiter only, grants
// nothing (the key stays free, and whoever asks first takes it), and the
// waiter keeps its place until it takes the key itself.
func TestWaiterHintsTellTheFirstWaiter(t *testing.T) {
	s := redistest.StartServer(t)
	b := newBackend(t, s.Client(t), goredis.WithWaiterHints(time.Minute))
	ctx := context.Background()
	holder := acquire(t, b, "q", 10*time.Second)
	ch1, ch2 := queueTwo(t, b)

	if errs := b.Release(ctx, []ctxlock.Lease{holder}); errs != nil {
		t.Fatal(errs)
	}
	hinted(t, ch1, "the release (w1 is first)")
	notReceived(t, ch2, "w2")
	if got := lockValue(t, s, b, "q"); got != "" {
		t.Fatalf("key after a hinted release holds %q; want it free", got)
	}

	// The free key is kept for w1 for the hint's window; then anyone may
	// take it, a TryLock too, and w1 keeps its place.
	mustRefuse(t, b, "")
	mustRefuse(t, b, "w3")
	endHintWindow(t, s, b, "q")
	other, err := b.Acquire(ctx, waitReq(""))
	if err != nil {
		t.Fatalf("TryLock of the free key after w1's hint window: %v; want the key", err)
	}
	if n := queueLen(t, s, b, "q"); n != 3 {
		t.Fatalf("queue length after another owner took the key: %d; want 3 (w1, w2, w3)", n)
	}
	if errs := b.Release(ctx, []ctxlock.Lease{other}); errs != nil {
		t.Fatal(errs)
	}
	hinted(t, ch1, "the second release (w1 is still first)")
	notReceived(t, ch2, "w2")

	// w1 takes the key (its lease is its own, not a grant) and keeps its
	// place until Dequeue; the next release tells w2.
	req := waitReq("w1")
	l1, err := b.Acquire(ctx, req)
	if err != nil || l1.Owner != req.Owner {
		t.Fatalf("w1's Acquire = %+v, %v; want the key for owner %q", l1, err, req.Owner)
	}
	if n := queueLen(t, s, b, "q"); n != 3 {
		t.Fatalf("queue length after w1 took the key: %d; want 3 (w1, w2, w3)", n)
	}
	if err := b.Dequeue(ctx, "q", "w1"); err != nil {
		t.Fatal(err)
	}
	if n := queueLen(t, s, b, "q"); n != 2 {
		t.Fatalf("queue length after w1's Dequeue: %d; want 2 (w2, w3)", n)
	}
	notReceived(t, ch2, "w2 (the key is w1's)")
	if errs := b.Release(ctx, []ctxlock.Lease{l1}); errs != nil {
		t.Fatal(errs)
	}
	hinted(t, ch2, "w1's release (w2 is first now)")
	notReceived(t, ch1, "w1 (no longer queued)")
}

// A waiter that is not first takes a free key nobody was told of; a relock
// with others queued hints the first and queues the caller behind them;
// Leave of the first hints the next when the key is free.
func TestWaiterHintsRelockAndLeave(t *testing.T) {
	s := redistest.StartServer(t)
	b := newBackend(t, s.Client(t), goredis.WithWaiterHints(time.Minute))
	ctx := context.Background()
	acquire(t, b, "q", 10*time.Second)
	ch1, ch2 := queueTwo(t, b)
	lk, _, _ := b.Keys("q")
	if err := s.Client(t).Del(ctx, lk).Err(); err != nil { // the holder's lease lapses
		t.Fatal(err)
	}
	// Dequeue tells no one, even of a free key.
	if err := b.Dequeue(ctx, "q", "nobody"); err != nil {
		t.Fatal(err)
	}
	flushInbox(t, s, b)
	notReceived(t, ch1, "w1 after a Dequeue")
	// Nobody was told (no release), so the free key is kept for no one.
	req2 := waitReq("w2")
	l2, err := b.Acquire(ctx, req2)
	if err != nil {
		t.Fatalf("w2 (second in the queue) on a free key: %v; want the key", err)
	}
	if err := b.Dequeue(ctx, "q", "w2"); err != nil {
		t.Fatal(err)
	}
	if n := queueLen(t, s, b, "q"); n != 1 {
		t.Fatalf("queue length after w2 took the key and was dequeued: %d; want 1 (w1)", n)
	}

	// w2 locks again with w1 queued: the relock gives the key up, tells w1,
	// and queues w3 (the new Lock call) behind it.
	_, wanted, err := b.Relock(ctx, l2, waitReq("w3"))
	if err != nil || !wanted {
		t.Fatalf("Relock with w1 queued: wanted %v, %v; want released for w1", wanted, err)
	}
	hinted(t, ch1, "the relock")
	notReceived(t, ch2, "w2")
	if got := lockValue(t, s, b, "q"); got != "" {
		t.Fatalf("key after a yielding relock holds %q; want it free", got)
	}
	if n := queueLen(t, s, b, "q"); n != 2 {
		t.Fatalf("queue length after the relock: %d; want 2 (w1, w3)", n)
	}
	ch3, stop3 := b.WatchWaiter("q", "w3")
	defer stop3()
	drain(ch3)

	// w1 gives up with the key free: w3 is told.
	if err := b.Leave(ctx, "q", "w1"); err != nil {
		t.Fatal(err)
	}
	hinted(t, ch3, "w1 leaving")
	if n := queueLen(t, s, b, "q"); n != 1 {
		t.Fatalf("queue length after w1 left: %d; want 1 (w3)", n)
	}

	// The free key is kept for w3: a relock of a lease that is gone is
	// refused like an Acquire, and w3 takes the key.
	if _, _, err := b.Relock(ctx, l2, waitReq("")); !errors.Is(err, ctxlock.ErrHeld) {
		t.Fatalf("Relock of a gone lease with the free key kept for w3: %v; want ErrHeld", err)
	}
	if _, err := b.Acquire(ctx, waitReq("w3")); err != nil {
		t.Fatalf("w3's Acquire after its hint: %v; want the key", err)
	}
}

// lockValue returns the value of key's lease on s ("" when free).
func lockValue(t *testing.T, s *redistest.Server, b *goredis.Backend, key string) string {
	t.Helper()
	lk, _, _ := b.Keys(key)
	v, _ := s.Client(t).Get(context.Background(), lk).Result()
	return v
}

// endHintWindow makes the window of key's last hint end now, as time would.
func endHintWindow(t *testing.T, s *redistest.Server, b *goredis.Backend, key string) {
	t.Helper()
	lk, _, _ := b.Keys(key)
	ctx := context.Background()
	h, err := s.Client(t).HGet(ctx, lk+":qd", "\x00hint").Result()
	waiter, _, ok := strings.Cut(h, " ")
	if err != nil || !ok {
		t.Fatalf("hint record of %q: %q, %v; want \"<waiter> <until ms>\"", key, h, err)
	}
	if err := s.Client(t).HSet(ctx, lk+":qd", "\x00hint", waiter+" 0").Err(); err != nil {
		t.Fatal(err)
	}
}

// flushInbox returns once every message published on b's inbox before it
// was called has been handled: it publishes a hint to a waiter of its own
// and waits for it (one subscription delivers in order).
func flushInbox(t *testing.T, s *redistest.Server, b *goredis.Backend) {
	t.Helper()
	ch, stop := b.WatchWaiter("q", "flush")
	defer stop()
	drain(ch)
	if err := s.Client(t).Publish(context.Background(), b.Inbox(), "0 0 flush").Err(); err != nil {
		t.Fatal(err)
	}
	hinted(t, ch, "a hint of the test's own")
}
