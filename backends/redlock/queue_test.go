package redlock_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/backends/redlock"
)

// queues returns key's waiter queue on every node, as "[w1 w2]" each.
func queues(t *testing.T, c *cluster, b *redlock.Backend, key string) []string {
	t.Helper()
	lk, _, _ := b.Keys(key)
	out := make([]string, len(c.clients))
	for i, cl := range c.clients {
		ids, err := cl.LRange(context.Background(), lk+":hq", 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		out[i] = fmt.Sprint(ids)
	}
	return out
}

// A refused waiter queues on the nodes that refused it, and an attempt that
// took the key on too few nodes gives it back there and queues too: the
// waiter is queued on every node. A release hints it; it takes the key and
// leaves every queue.
func TestWaiterQueuedEverywhereThenServed(t *testing.T) {
	c := startNodes(t, 5)
	ctx := context.Background()
	key := uniqueKey("k")
	holder := acquireSettled(t, c.clients, key)
	lk, _, _ := newBackend(t, c.clients).Keys(key)
	for _, cl := range c.clients[3:] { // the holder's lease lapsed on two nodes
		if err := cl.Del(ctx, lk).Err(); err != nil {
			t.Fatal(err)
		}
	}
	req := lockReq(key)
	settled(t, c.clients, func(b *redlock.Backend) {
		turns, stop := b.WatchWaiter(key, req.Waiter)
		defer stop()
		_, err := b.Acquire(ctx, req)
		if !errors.Is(err, ctxlock.ErrHeld) {
			t.Fatalf("Acquire with the key held on a quorum: %v; want ErrHeld", err)
		}
		want := repeat(fmt.Sprint([]string{req.Waiter}), 5)
		if got := queues(t, c, b, key); !slices.Equal(got, want) {
			t.Fatalf("queues after a refusal with two nodes free: %q; want the waiter on every node", got)
		}
		if got := holders(t, c, b, key); !slices.Equal(got[3:], []string{"", ""}) {
			t.Fatalf("the failed attempt's leases on the free nodes: %q; want them given back", got[3:])
		}

		if errs := newBackend(t, c.clients).Release(ctx, []ctxlock.Lease{holder}); errors.Join(errs...) != nil {
			t.Fatalf("Release: %v", errs)
		}
		select {
		case h := <-turns:
			if h != (ctxlock.Handoff{}) {
				t.Fatalf("WatchWaiter gave %+v; want a hint (zero Handoff)", h)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the waiter was not told of the release")
		}
		l, err := b.Acquire(ctx, req)
		if err != nil || l.Owner != req.Owner {
			t.Fatalf("the waiter's Acquire after its hint: %+v, %v", l, err)
		}
	})
	if got := queues(t, c, newBackend(t, c.clients), key); !slices.Equal(got, repeat("[]", 5)) {
		t.Fatalf("queues after the waiter took the key: %q; want empty", got)
	}
}

// Leave takes the waiter out of every node's queue.
func TestWaiterLeavesEveryNode(t *testing.T) {
	c := startNodes(t, 5)
	ctx := context.Background()
	key := uniqueKey("k")
	acquireSettled(t, c.clients, key)
	req := lockReq(key)
	settled(t, c.clients, func(b *redlock.Backend) {
		if _, err := b.Acquire(ctx, req); !errors.Is(err, ctxlock.ErrHeld) {
			t.Fatalf("Acquire of a held key: %v; want ErrHeld", err)
		}
		if err := b.Leave(ctx, key, req.Waiter); err != nil {
			t.Fatalf("Leave: %v", err)
		}
	})
	if got := queues(t, c, newBackend(t, c.clients), key); !slices.Equal(got, repeat("[]", 5)) {
		t.Fatalf("queues after Leave: %q; want empty", got)
	}
}

// Through Managers in four processes (in effect): Lock calls that queue
// behind a holder get the key in the order they asked for it, and every
// release tells only the first of them, on every node.
func TestManagersServedInOrderOneHintPerRelease(t *testing.T) {
	c := startNodes(t, 5)
	key := uniqueKey("fifo")
	// A hint keeps the key for its waiter for a long window, and attempts
	// do not time out, even under -race on a busy machine. With the default
	// 50 ms a slow waiter can lose its turn to another's retry, and a node
	// answering after an attempt gave up can queue a waiter that already
	// won (it is then hinted out of order until its place lapses): the
	// order is kept only as far as waiters come within the window.
	newManager := func() *ctxlock.Manager {
		m := ctxlock.NewManager(newBackend(t, c.clients, redlock.WithNodeOptions(goredis.WithWaiterHints(10*time.Second))))
		t.Cleanup(func() { m.Close(context.Background()) })
		return m
	}
	hints := recordHints(t, c)
	holder := newManager().NewLock(key, ctxlock.WithAcquireTimeout(5*time.Second))
	if _, err := holder.Lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	lk, _, _ := newBackend(t, c.clients).Keys(key)
	order := make(chan int, 3)
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		l := newManager().NewLock(key, ctxlock.WithAcquireTimeout(5*time.Second))
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
		// Waiter i is queued on a quorum of nodes before waiter i+1 starts.
		waitQueued(t, c.clients, lk, i+1)
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
	// Waiter ids sort by the start of their Lock calls: each node hinted
	// the waiters in that order, each release only the first in line (a
	// node where a waiter's attempt timed out may not have it queued), and
	// each waiter was told.
	var told []string
	all := hints.flush(t)
	for i, hs := range all {
		if !slices.IsSorted(hs) {
			t.Errorf("node %d hinted %q; want the first waiter of each release, in queue order", i, hs)
		}
		told = append(told, hs...)
	}
	// (A Lock call whose first attempt failed on slow nodes may be told
	// once in vain: its second attempt was refused by its own first
	// lease on one node, which queued it there until it won.)
	slices.Sort(told)
	if n := len(slices.Compact(told)); n < 3 {
		t.Errorf("%d waiters were told of a release, want 3: %q", n, all)
	}
}

// A release tells the first waiter in the order of waiter ids (not of
// arrival), and no one else, on every node.
func TestReleaseHintsFirstWaiterOnly(t *testing.T) {
	c := startNodes(t, 5)
	ctx := context.Background()
	key := uniqueKey("k")
	holder := acquireSettled(t, c.clients, key)
	hints := recordHints(t, c)
	b := newBackend(t, c.clients)
	for _, w := range []string{"w3", "w2", "w1"} {
		req := lockReq(key)
		req.Waiter = w
		if _, err := b.Acquire(ctx, req); !errors.Is(err, ctxlock.ErrHeld) {
			t.Fatalf("Acquire by %s: %v; want ErrHeld", w, err)
		}
	}
	if errs := b.Release(ctx, []ctxlock.Lease{holder}); errors.Join(errs...) != nil {
		t.Fatalf("Release: %v", errs)
	}
	if got := hints.flush(t); fmt.Sprint(got) != fmt.Sprint(repeatSlice([]string{"w1"}, 5)) {
		t.Fatalf("hints of the holder's release, per node: %q; want w1 alone on every node", got)
	}
	req := lockReq(key)
	req.Waiter = "w1"
	var l ctxlock.Lease
	settled(t, c.clients, func(rb *redlock.Backend) {
		var err error
		if l, err = rb.Acquire(ctx, req); err != nil {
			t.Fatalf("w1's Acquire after its hint: %v", err)
		}
	})
	if errs := b.Release(ctx, []ctxlock.Lease{l}); errors.Join(errs...) != nil {
		t.Fatalf("Release: %v", errs)
	}
	if got := hints.flush(t); fmt.Sprint(got) != fmt.Sprint(repeatSlice([]string{"w1", "w2"}, 5)) {
		t.Fatalf("hints after w1's release, per node: %q; want w1, then w2 alone, on every node", got)
	}
}

// A node that refuses a waiter after its attempt won on a quorum (its answer
// came late) queues it there: the backend takes it out again.
func TestLateRefusalDequeued(t *testing.T) {
	c := startNodes(t, 5)
	ctx := context.Background()
	key := uniqueKey("k")
	b := newBackend(t, c.clients)
	lk, _, _ := b.Keys(key)
	if err := c.clients[4].Set(ctx, lk, "someone-else", 10*time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	// Node 4 answers after the other four granted.
	if err := c.clients[4].Do(ctx, "CLIENT", "PAUSE", 300, "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	req := lockReq(key)
	settled(t, c.clients, func(rb *redlock.Backend) {
		if _, err := rb.Acquire(ctx, req); err != nil {
			t.Fatalf("Acquire with four nodes free: %v", err)
		}
	})
	if got := queues(t, c, b, key); !slices.Equal(got, repeat("[]", 5)) {
		t.Fatalf("queues after the late refusal: %q; want empty everywhere", got)
	}
}

func repeatSlice(s []string, n int) [][]string {
	out := make([][]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// hintRecorder records every hint each node publishes on any inbox.
type hintRecorder struct {
	c       *cluster
	mu      sync.Mutex
	hints   [][]string      // per node, in order
	flushed []chan struct{} // per node: the test's own message came back
}

func recordHints(t *testing.T, c *cluster) *hintRecorder {
	t.Helper()
	r := &hintRecorder{c: c, hints: make([][]string, len(c.clients)), flushed: make([]chan struct{}, len(c.clients))}
	for i, cl := range c.clients {
		ps := cl.PSubscribe(context.Background(), "ctxlock:inbox:*")
		t.Cleanup(func() { ps.Close() })
		if _, err := ps.Receive(context.Background()); err != nil {
			t.Fatal(err)
		}
		ch := ps.Channel()
		r.flushed[i] = make(chan struct{}, 1)
		go func() {
			for msg := range ch {
				w, ok := strings.CutPrefix(msg.Payload, "0 0 ")
				switch {
				case w == "~flush":
					r.flushed[i] <- struct{}{}
				case ok:
					r.mu.Lock()
					r.hints[i] = append(r.hints[i], w)
					r.mu.Unlock()
				}
			}
		}()
	}
	return r
}

// flush returns the hints recorded so far, per node, once every node's
// earlier messages have come in.
func (r *hintRecorder) flush(t *testing.T) [][]string {
	t.Helper()
	for i, cl := range r.c.clients {
		if err := cl.Publish(context.Background(), "ctxlock:inbox:flush", "0 0 ~flush").Err(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-r.flushed[i]:
		case <-time.After(10 * time.Second):
			t.Fatalf("node %d: the test's own message did not come back", i)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([][]string, len(r.hints))
	for i, hs := range r.hints {
		out[i] = slices.Clone(hs)
	}
	return out
}

// waitQueued waits until key's queue holds n waiters on a quorum of nodes.
func waitQueued(t *testing.T, clients []redis.UniversalClient, lockKey string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		queued := 0
		for _, cl := range clients {
			if l, err := cl.LLen(context.Background(), lockKey+":hq").Result(); err == nil && l == int64(n) {
				queued++
			}
		}
		if queued >= redlock.Quorum(len(clients)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters not queued on a quorum of nodes within 10s", n)
		}
		time.Sleep(time.Millisecond) // polling the servers' state, not synchronising goroutines
	}
}
