package goredis_test

import (
	"context"
	"errors"
	"fmt"
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

// queue returns key's waiter queue on b's server, as "[w1 w2]".
func queue(t *testing.T, s *redistest.Server, b *goredis.Backend, key string) string {
	t.Helper()
	lk, _, _ := b.Keys(key)
	ids, err := s.Client(t).LRange(context.Background(), lk+":hq", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(ids)
}

// With WithWaiterHints a release tells the first waiter only, grants
// nothing (the key stays free, and whoever asks first takes it), and the
// waiter keeps its place until it takes the key itself.
func TestWaiterHintsTellTheFirstWaiter(t *testing.T) {
	s, b := hintsBackend(t)
	ctx := context.Background()
	holder := acquire(t, b, "q", 10*time.Second)
	ch1, ch2 := queueTwo(t, b)

	if errs := b.Release(ctx, []ctxlock.Lease{holder}); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	hinted(t, ch1, "the release (w1 is first)")
	notReceived(t, ch2, "w2")
	if got := lockValue(t, s, b, "q"); got != "" {
		t.Fatalf("key after a hinted release holds %q; want it free", got)
	}

	// The free key is kept for w1 for the hint's window, and a refusal says
	// how long; then anyone may take it, a TryLock too, and w1 keeps its
	// place.
	for _, w := range []string{"", "w3"} {
		_, err := b.Acquire(ctx, waitReq(w))
		var held *ctxlock.HeldError
		if !errors.As(err, &held) || held.Remaining <= 0 || held.Remaining > time.Minute {
			t.Fatalf("Acquire (waiter %q) of the key kept for w1: %v; want HeldError with the window left (0, 1m]", w, err)
		}
	}
	endHintWindow(t, s, b, "q")
	other, err := b.Acquire(ctx, waitReq(""))
	if err != nil {
		t.Fatalf("TryLock of the free key after w1's hint window: %v; want the key", err)
	}
	if got := queue(t, s, b, "q"); got != "[w1 w2 w3]" {
		t.Fatalf("queue after another owner took the key: %s; want [w1 w2 w3]", got)
	}
	if errs := b.Release(ctx, []ctxlock.Lease{other}); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	hinted(t, ch1, "the second release (w1 is still first)")
	notReceived(t, ch2, "w2")

	// w1 takes the key (its lease is its own, not a grant) and leaves the
	// queue; the next release tells w2.
	req := waitReq("w1")
	l1, err := b.Acquire(ctx, req)
	if err != nil || l1.Owner != req.Owner {
		t.Fatalf("w1's Acquire = %+v, %v; want the key for owner %q", l1, err, req.Owner)
	}
	if got := queue(t, s, b, "q"); got != "[w2 w3]" {
		t.Fatalf("queue after w1 took the key: %s; want [w2 w3]", got)
	}
	if errs := b.Release(ctx, []ctxlock.Lease{l1}); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	hinted(t, ch2, "w1's release (w2 is first now)")
	notReceived(t, ch1, "w1 (no longer queued)")
}

// The queue is in the order of waiter ids, whatever the order of arrival;
// Requeue gives back a lease and puts its waiter back in its place, and
// tells the first waiter only when that is someone else.
func TestWaiterHintsOrderAndRequeue(t *testing.T) {
	s, b := hintsBackend(t)
	ctx := context.Background()
	acquire(t, b, "q", 10*time.Second)
	for _, w := range []string{"w3", "w1", "w4", "w2"} {
		mustRefuse(t, b, w)
	}
	if got := queue(t, s, b, "q"); got != "[w1 w2 w3 w4]" {
		t.Fatalf("queue = %s; want [w1 w2 w3 w4] (by id)", got)
	}
	ch1, stop1 := b.WatchWaiter("q", "w1")
	defer stop1()
	ch2, stop2 := b.WatchWaiter("q", "w2")
	defer stop2()
	drain(ch1, ch2)
	lapse(t, s, b, "q") // the holder's lease

	// w1 takes the free key here, but (say) not on a quorum of servers: it
	// gives it back and is first again; nobody is told (w1 retries itself).
	req1 := waitReq("w1")
	l1, err := b.Acquire(ctx, req1)
	if err != nil {
		t.Fatalf("w1 on the free key: %v", err)
	}
	if got := queue(t, s, b, "q"); got != "[w2 w3 w4]" {
		t.Fatalf("queue after w1 took the key: %s; want [w2 w3 w4]", got)
	}
	if err := b.Requeue(ctx, l1, "w1", req1.TTL); err != nil {
		t.Fatal(err)
	}
	if got := queue(t, s, b, "q"); got != "[w1 w2 w3 w4]" {
		t.Fatalf("queue after w1's Requeue: %s; want [w1 w2 w3 w4]", got)
	}
	if got := lockValue(t, s, b, "q"); got != "" {
		t.Fatalf("key after Requeue holds %q; want it free", got)
	}
	flushInbox(t, s, b)
	notReceived(t, ch1, "w1 after its own Requeue")
	notReceived(t, ch2, "w2 after w1's Requeue")

	// w2 takes it and gives it back: w1, first, is told.
	req2 := waitReq("w2")
	l2, err := b.Acquire(ctx, req2)
	if err != nil {
		t.Fatalf("w2 on the free key nobody was told of: %v", err)
	}
	if err := b.Requeue(ctx, l2, "w2", req2.TTL); err != nil {
		t.Fatal(err)
	}
	hinted(t, ch1, "w2's Requeue (w1 is first)")
	if got := queue(t, s, b, "q"); got != "[w1 w2 w3 w4]" {
		t.Fatalf("queue after w2's Requeue: %s; want [w1 w2 w3 w4]", got)
	}
	// w1 takes the key. A Requeue of a lease that is gone (a late one)
	// changes nothing: the holder's lease stays, and the queue too.
	l1, err = b.Acquire(ctx, req1)
	if err != nil {
		t.Fatalf("w1 after its hint: %v", err)
	}
	if err := b.Requeue(ctx, l2, "w2", req2.TTL); err != nil {
		t.Fatal(err)
	}
	if err := b.Requeue(ctx, l2, "w5", req2.TTL); err != nil {
		t.Fatal(err)
	}
	if got := lockValue(t, s, b, "q"); got != l1.Owner {
		t.Fatalf("key after a Requeue of another owner's gone lease holds %q; want w1's %q", got, l1.Owner)
	}
	if got := queue(t, s, b, "q"); got != "[w2 w3 w4]" {
		t.Fatalf("queue after Requeues of a gone lease: %s; want [w2 w3 w4]", got)
	}
}

// A waiter that is not first takes a free key nobody was told of, and
// leaves the queue; a relock with others queued hints the first and queues
// the caller; Leave of the first hints the next when the key is free; a
// free key kept for a waiter is refused to a relock too.
func TestWaiterHintsRelockAndLeave(t *testing.T) {
	s, b := hintsBackend(t)
	ctx := context.Background()
	acquire(t, b, "q", 10*time.Second)
	ch1, ch2 := queueTwo(t, b)
	lapse(t, s, b, "q") // the holder's lease
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
	if got := queue(t, s, b, "q"); got != "[w1]" {
		t.Fatalf("queue after w2 took the key: %s; want [w1]", got)
	}

	// w2 locks again with w1 queued: the relock gives the key up, tells w1,
	// and queues w3 (the new Lock call) behind it.
	_, wanted, queued, err := b.Relock(ctx, l2, waitReq("w3"))
	if err != nil || !wanted || !queued {
		t.Fatalf("Relock with w1 queued: wanted %v, queued %v, %v; want released for w1, w3 queued", wanted, queued, err)
	}
	hinted(t, ch1, "the relock")
	notReceived(t, ch2, "w2")
	if got := lockValue(t, s, b, "q"); got != "" {
		t.Fatalf("key after a yielding relock holds %q; want it free", got)
	}
	if got := queue(t, s, b, "q"); got != "[w1 w3]" {
		t.Fatalf("queue after the relock: %s; want [w1 w3]", got)
	}
	ch3, stop3 := b.WatchWaiter("q", "w3")
	defer stop3()
	drain(ch3)

	// w1 gives up with the key free: w3 is told.
	if err := b.Leave(ctx, "q", "w1"); err != nil {
		t.Fatal(err)
	}
	hinted(t, ch3, "w1 leaving")
	if got := queue(t, s, b, "q"); got != "[w3]" {
		t.Fatalf("queue after w1 left: %s; want [w3]", got)
	}

	// The free key is kept for w3: a relock of a lease that is gone is
	// refused like an Acquire, and w3 takes the key.
	if _, _, _, err := b.Relock(ctx, l2, waitReq("")); !errors.Is(err, ctxlock.ErrHeld) {
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
	h, err := s.Client(t).HGet(ctx, lk+":hqd", "\x00hint").Result()
	waiter, _, ok := strings.Cut(h, " ")
	if err != nil || !ok {
		t.Fatalf("hint record of %q: %q, %v; want \"<waiter> <until ms>\"", key, h, err)
	}
	if err := s.Client(t).HSet(ctx, lk+":hqd", "\x00hint", waiter+" 0").Err(); err != nil {
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

// Dequeue takes a waiter out quietly, even with the key free.
func TestWaiterHintsDequeue(t *testing.T) {
	s, b := hintsBackend(t)
	ctx := context.Background()
	acquire(t, b, "q", 10*time.Second)
	ch1, ch2 := queueTwo(t, b)
	lapse(t, s, b, "q") // the holder's lease
	if err := b.Dequeue(ctx, "q", "w1"); err != nil {
		t.Fatal(err)
	}
	if got := queue(t, s, b, "q"); got != "[w2]" {
		t.Fatalf("queue after w1's Dequeue: %s; want [w2]", got)
	}
	flushInbox(t, s, b)
	notReceived(t, ch1, "w1 after its Dequeue")
	notReceived(t, ch2, "w2 after w1's Dequeue")
}

// A relock by a waiter that is first in line takes the key (there is no one
// to yield to), and one by a waiter further back takes a free key nobody
// was told of; either leaves the queue.
func TestWaiterHintsRelockTakesItsTurn(t *testing.T) {
	s, b := hintsBackend(t)
	ctx := context.Background()
	holder := acquire(t, b, "q", 10*time.Second)
	mustRefuse(t, b, "w1")
	l1, wanted, _, err := b.Relock(ctx, holder, waitReq("w1"))
	if err != nil || wanted {
		t.Fatalf("Relock by the first waiter: wanted %v, %v; want the key", wanted, err)
	}
	if got := queue(t, s, b, "q"); got != "[]" {
		t.Fatalf("queue after the first waiter's relock: %s; want []", got)
	}

	mustRefuse(t, b, "w2")
	mustRefuse(t, b, "w3")
	lapse(t, s, b, "q") // l1
	if _, wanted, _, err := b.Relock(ctx, l1, waitReq("w3")); err != nil || wanted {
		t.Fatalf("Relock by w3 of a free key nobody was told of: wanted %v, %v; want the key", wanted, err)
	}
	if got := queue(t, s, b, "q"); got != "[w2]" {
		t.Fatalf("queue after w3's relock: %s; want [w2]", got)
	}
}

// hintsBackend starts a server and a Backend on it whose hints keep the key
// for a minute (no test waits for a window to end).
func hintsBackend(t *testing.T) (*redistest.Server, *goredis.Backend) {
	t.Helper()
	s := redistest.StartServer(t)
	return s, newBackend(t, s.Client(t), goredis.WithWaiterHints(time.Minute))
}

// lapse deletes key's lease on s, as its TTL ending would.
func lapse(t *testing.T, s *redistest.Server, b *goredis.Backend, key string) {
	t.Helper()
	lk, _, _ := b.Keys(key)
	if err := s.Client(t).Del(context.Background(), lk).Err(); err != nil {
		t.Fatal(err)
	}
}
