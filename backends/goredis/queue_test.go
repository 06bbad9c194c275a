package goredis_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

func waitReq(waiter string) ctxlock.AcquireRequest {
	return ctxlock.AcquireRequest{Key: "q", Owner: owner(), TTL: 10 * time.Second, Timeout: time.Second, Waiter: waiter}
}

func mustRefuse(t *testing.T, b *goredis.Backend, waiter string) {
	t.Helper()
	if _, err := b.Acquire(context.Background(), waitReq(waiter)); !errors.Is(err, ctxlock.ErrHeld) {
		t.Fatalf("Acquire by %s: %v, want refused (ErrHeld)", waiter, err)
	}
}

// drain drops the wake-up a new subscription gives every watcher.
func drain[T any](chs ...<-chan T) {
	for _, ch := range chs {
		select {
		case <-ch:
		default:
		}
	}
}

func notReceived[T any](t *testing.T, ch <-chan T, who string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("%s was told %+v; it is not its turn", who, v)
	default:
	}
}

// granted waits for a grant on ch and returns it.
func granted(t *testing.T, ch <-chan ctxlock.Handoff, what string) ctxlock.Handoff {
	t.Helper()
	deadline := time.After(waitLong)
	for {
		select {
		case h := <-ch:
			if h.Token > 0 {
				return h
			}
		case <-deadline:
			t.Fatalf("no grant after %s within %v", what, waitLong)
		}
	}
}

// Refused waiters queue in arrival order; a release grants the key to the
// first only, telling it the token, and the waiter's own Acquire finds the
// lease (a lost notification costs one retry).
func TestWaiterQueueHandsOffInOrder(t *testing.T) {
	s := redistest.StartServer(t)
	b := newBackend(t, s.Client(t))
	ctx := context.Background()
	holder := acquire(t, b, "q", 10*time.Second)
	ch1, ch2 := queueTwo(t, b)

	if errs := b.Release(ctx, []ctxlock.Lease{holder}); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	h1 := granted(t, ch1, "the release (w1 is first)")
	if h1.Token <= holder.Token || h1.TTL <= 0 || h1.TTL > goredis.DefaultWaiterKeep {
		t.Fatalf("grant to w1 = %+v; want a token above %d and a TTL in (0, %v]", h1, holder.Token, goredis.DefaultWaiterKeep)
	}
	notReceived(t, ch2, "w2")
	lk, _, _ := b.Keys("q")
	if v, err := s.Client(t).Get(ctx, lk).Result(); err != nil || v != ctxlock.GrantOwner("w1", h1.Token) {
		t.Fatalf("lock value after the hand-off = %q, %v; want the grant's owner %q", v, err, ctxlock.GrantOwner("w1", h1.Token))
	}
	mustRefuse(t, b, "w2") // the key is w1's
	mustRefuse(t, b, "")   // and a TryLock does not jump the queue
	l1, err := b.Acquire(ctx, waitReq("w1"))
	if err != nil || l1.Owner != ctxlock.GrantOwner("w1", h1.Token) || l1.Token != h1.Token {
		t.Fatalf("w1's Acquire after its grant = %+v, %v; want owner w1, token %d", l1, err, h1.Token)
	}
	if errs := b.Release(ctx, []ctxlock.Lease{l1}); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	h2 := granted(t, ch2, "the second release (w2 is first now)")
	if h2.Token <= h1.Token {
		t.Fatalf("grant to w2 has token %d, not above w1's %d", h2.Token, h1.Token)
	}
	if l2, err := b.Acquire(ctx, waitReq("w2")); err != nil || l2.Owner != ctxlock.GrantOwner("w2", h2.Token) || l2.Token != h2.Token {
		t.Fatalf("w2's Acquire after its grant = %+v, %v", l2, err)
	}
}

// queueTwo has waiters w1 and w2 refused on the held key "q", in that
// order, and watching for their turns.
func queueTwo(t *testing.T, b *goredis.Backend) (ch1, ch2 <-chan ctxlock.Handoff) {
	t.Helper()
	mustRefuse(t, b, "w1")
	mustRefuse(t, b, "w2")
	ch1, stop1 := b.WatchWaiter("q", "w1")
	t.Cleanup(stop1)
	ch2, stop2 := b.WatchWaiter("q", "w2")
	t.Cleanup(stop2)
	drain(ch1, ch2)
	return ch1, ch2
}

// other is a second Backend on s, for watching from another process.
func other(t *testing.T, s *redistest.Server) *goredis.Backend { return newBackend(t, s.Client(t)) }

// A waiter that gives up leaves the queue and gives back a key granted to
// it; the next waiter gets it at once.
func TestWaiterQueueLeave(t *testing.T) {
	s := redistest.StartServer(t)
	b := newBackend(t, s.Client(t))
	o := other(t, s) // the holder, in another process
	ctx := context.Background()
	holder := acquire(t, o, "q", 10*time.Second)
	ch1, ch2 := queueTwo(t, b)
	if errs := o.Release(ctx, []ctxlock.Lease{holder}); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	granted(t, ch1, "the release")
	notReceived(t, ch2, "w2 (w1 is first)")
	mustRefuse(t, b, "") // granted to w1
	if err := b.Leave(ctx, "q", "w1"); err != nil {
		t.Fatal(err)
	}
	h := granted(t, ch2, "w1 leaving")
	if l, err := b.Acquire(ctx, waitReq("w2")); err != nil || l.Owner != ctxlock.GrantOwner("w2", h.Token) || l.Token != h.Token {
		t.Fatalf("w2 after w1 left = %+v, %v; want its grant (token %d)", l, err, h.Token)
	}
}

// A waiter that stops retrying (its process died) loses its place after
// the keep time; a key granted to it meanwhile lapses as soon, and the key
// goes to the next.
func TestWaiterQueueDeadWaiterLapses(t *testing.T) {
	s := redistest.StartServer(t)
	const keep = 300 * time.Millisecond
	b := newBackend(t, s.Client(t), goredis.WithWaiterKeep(keep))
	ctx := context.Background()
	holder := acquire(t, b, "q", 10*time.Second)
	mustRefuse(t, b, "dead")
	mustRefuse(t, b, "alive")
	if errs := b.Release(ctx, []ctxlock.Lease{holder}); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	released := time.Now()                                           // the grant was made before: it ends before released+keep
	mustRefuse(t, b, "alive")                                        // granted to "dead", for the keep time
	time.Sleep(time.Until(released.Add(keep + 50*time.Millisecond))) // waiting for the grant to run out
	if _, err := b.Acquire(ctx, waitReq("alive")); err != nil {
		t.Fatalf("Acquire after the dead waiter's grant lapsed: %v", err)
	}
}

// Through Managers in three processes (in effect): Lock calls that queue
// behind a holder get the key in the order they asked for it.
func TestManagersServedInArrivalOrder(t *testing.T) {
	s := redistest.StartServer(t)
	newManager := func() *ctxlock.Manager {
		m := ctxlock.NewManager(newBackend(t, s.Client(t)))
		t.Cleanup(func() { m.Close(context.Background()) })
		return m
	}
	holder := newManager().NewLock("fifo")
	if _, err := holder.Lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := s.Client(t)
	lk, _, _ := newBackend(t, c).Keys("fifo")
	order := make(chan int, 3)
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		l := newManager().NewLock("fifo")
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if _, err := l.Lock(ctx); err != nil {
				t.Errorf("waiter %d: %v", i, err)
				return
			}
			order <- i
			l.Unlock()
		}()
		// Waiter i is in the server's queue before waiter i+1 starts.
		deadline := time.Now().Add(5 * time.Second)
		for {
			n, err := c.LLen(context.Background(), lk+":q").Result()
			if err != nil {
				t.Fatal(err)
			}
			if n == int64(i+1) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("waiter %d did not queue: queue length %d", i, n)
			}
			time.Sleep(time.Millisecond) // polling the server's state, not synchronising goroutines
		}
	}
	holder.Unlock()
	wg.Wait()
	close(order)
	var got []int
	for i := range order {
		got = append(got, i)
	}
	if fmt.Sprint(got) != "[0 1 2]" {
		t.Fatalf("waiters served in order %v, want [0 1 2]", got)
	}
}

// Every grant has its own owner: a Lock call granted a key twice (its first
// grant lapsed, or was given back, before it held it) must not lose the
// second grant to a retried release of the first.
func TestWaiterQueueGrantOwnersDiffer(t *testing.T) {
	s := redistest.StartServer(t)
	b := newBackend(t, s.Client(t))
	ctx := context.Background()
	lk, _, _ := b.Keys("q")
	ch, stop := b.WatchWaiter("q", "w1")
	defer stop()
	grantTo := func() ctxlock.Handoff {
		holder := acquire(t, b, "q", 10*time.Second)
		mustRefuse(t, b, "w1")
		drain(ch)
		if errs := b.Release(ctx, []ctxlock.Lease{holder}); errors.Join(errs...) != nil {
			t.Fatal(errs)
		}
		return granted(t, ch, "a release with w1 queued")
	}
	first := grantTo()
	firstLease := ctxlock.Lease{Key: "q", Owner: ctxlock.GrantOwner("w1", first.Token), Token: first.Token}
	if errs := b.Release(ctx, []ctxlock.Lease{firstLease}); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	second := grantTo()
	if second.Token <= first.Token {
		t.Fatalf("second grant token %d, first %d", second.Token, first.Token)
	}
	// A retry of the first release, arriving late.
	if errs := b.Release(ctx, []ctxlock.Lease{firstLease}); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	want := ctxlock.GrantOwner("w1", second.Token)
	if v, err := s.Client(t).Get(ctx, lk).Result(); err != nil || v != want {
		t.Fatalf("after a late release of the first grant the key holds %q (%v); want the second grant %q", v, err, want)
	}
}

// A free key someone queues for is kept for them: an acquire that is not the
// queue's head is refused with no remaining TTL, even on the uncontended
// fast path's first look (the key free), and the head then takes it.
func TestFreeKeyKeptForTheQueue(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	b := newBackend(t, c)
	ctx := context.Background()
	acquire(t, b, "q", 10*time.Second)
	mustRefuse(t, b, "w1") // queued
	lk, _, _ := b.Keys("q")
	if err := c.Del(ctx, lk).Err(); err != nil { // the holder's lease lapses
		t.Fatal(err)
	}

	for _, waiter := range []string{"", "w2"} {
		_, err := b.Acquire(ctx, waitReq(waiter))
		var held *ctxlock.HeldError
		if !errors.As(err, &held) || held.Remaining != 0 {
			t.Fatalf("Acquire (waiter %q) of a free key w1 queues for: %v; want HeldError with Remaining 0", waiter, err)
		}
	}
	if _, err := b.Acquire(ctx, waitReq("w1")); err != nil {
		t.Fatalf("Acquire by w1, the queue's head: %v; want the key", err)
	}
}

// A queue entry written by an older version ("<deadline ms>", without the
// grant's TTL and inbox) gets no grant: a release, or a relock, frees the
// key and names the waiter on the key's channel.
func TestHandOverToOldEntryFreesKey(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	b := newBackend(t, c)
	ctx := context.Background()
	for _, op := range []string{"release", "relock"} {
		t.Run(op, func(t *testing.T) {
			key := "old-entry-" + op
			holder := acquire(t, b, key, 10*time.Second)
			lk, _, _ := b.Keys(key)
			now, err := c.Time(ctx).Result()
			if err != nil {
				t.Fatal(err)
			}
			deadline := now.Add(10 * time.Second).UnixMilli()
			if err := c.HSet(ctx, lk+":qd", "old", deadline).Err(); err != nil {
				t.Fatal(err)
			}
			if err := c.RPush(ctx, lk+":q", "old").Err(); err != nil {
				t.Fatal(err)
			}
			switch op {
			case "release":
				if errs := b.Release(ctx, []ctxlock.Lease{holder}); errs[0] != nil {
					t.Fatal(errs[0])
				}
			case "relock":
				_, wanted, queued, err := b.Relock(ctx, holder, ctxlock.AcquireRequest{Key: key, Owner: owner(), TTL: 10 * time.Second, Timeout: time.Second, Waiter: "new"})
				if err != nil || !wanted || !queued {
					t.Fatalf("Relock = wanted %v, queued %v, %v; want true, true, nil", wanted, queued, err)
				}
			}
			if n, err := c.Exists(ctx, lk).Result(); err != nil || n != 0 {
				t.Fatalf("the lock key after the %s to an old entry: EXISTS = %d, %v; want it freed", op, n, err)
			}
		})
	}
}
