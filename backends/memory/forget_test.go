package memory

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
)

func (b *Backend) entries() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.keys)
}

func acquire(t *testing.T, b *Backend, key string, ttl time.Duration) ctxlock.Lease {
	t.Helper()
	l, err := b.Acquire(context.Background(), ctxlock.AcquireRequest{Key: key, Owner: "o-" + key, TTL: ttl})
	if err != nil {
		t.Fatalf("Acquire(%q): %v", key, err)
	}
	return l
}

// A program that locks many distinct keys keeps no memory for the ones it
// is done with: unlocked, contended (TryLock refused, Lock waiting on a
// watcher) or cancelled while waiting.
func TestFreeKeysAreForgotten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New()
		defer b.Close()
		m1, m2 := ctxlock.NewManager(b), ctxlock.NewManager(b)
		ctx := context.Background()
		var wg sync.WaitGroup
		for i := range 300 {
			key := fmt.Sprintf("order/%d", i)
			held := m1.NewLock(key)
			if _, err := held.Lock(ctx); err != nil {
				t.Fatal(err)
			}
			if ok, _, err := m2.NewLock(key).TryLock(ctx); ok || err != nil {
				t.Fatalf("TryLock of a held key = %v, %v", ok, err)
			}
			waiter := m2.NewLock(key)
			wctx, cancel := context.WithCancel(ctx)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := waiter.Lock(wctx); err == nil {
					waiter.Unlock()
				}
			}()
			synctest.Wait() // the waiter watches the key
			if i%2 == 0 {
				cancel() // gives up waiting
			}
			held.Unlock()
			wg.Wait()
			cancel()
		}
		for _, m := range []*ctxlock.Manager{m1, m2} {
			if err := m.Close(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if n := b.entries(); n != 0 {
			t.Fatalf("%d entries kept after every key was released and unwatched, want 0", n)
		}
	})
}

// Forgetting a key does not set its tokens back, nor those of any other key.
func TestTokensIncreaseAcrossForgetting(t *testing.T) {
	b := New()
	defer b.Close()
	ctx := context.Background()
	var last uint64
	for i := range 3 {
		l := acquire(t, b, "x", time.Minute)
		if l.Token <= last {
			t.Fatalf("lock %d of x: token %d after %d", i, l.Token, last)
		}
		last = l.Token
		b.Release(ctx, []ctxlock.Lease{l})
	}
	if n := b.entries(); n != 0 {
		t.Fatalf("%d entries kept, want 0", n)
	}
	y := acquire(t, b, "y", time.Minute)
	if y.Token <= last {
		t.Fatalf("first token of y = %d, want above %d, the highest forgotten", y.Token, last)
	}
	x := acquire(t, b, "x", time.Minute)
	if x.Token <= last {
		t.Fatalf("x after forgetting: token %d, want above %d", x.Token, last)
	}
	b.Evict("x")
	if x2 := acquire(t, b, "x", time.Minute); x2.Token <= x.Token {
		t.Fatalf("x after Evict: token %d, want above %d", x2.Token, x.Token)
	}
}

// Leases that lapse without a release (their holder gone) are forgotten as
// new keys arrive, unless someone watches them.
func TestSweepForgetsLapsedLeases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New()
		defer b.Close()
		for i := range 1500 {
			acquire(t, b, fmt.Sprintf("gone/%d", i), time.Second)
		}
		watched, stop := b.Watch("gone/0")
		defer stop()
		time.Sleep(2 * time.Second)
		select {
		case <-watched:
		default:
			t.Fatal("the watcher of a lapsed lease was not told")
		}
		for i := range 600 {
			acquire(t, b, fmt.Sprintf("new/%d", i), time.Minute)
		}
		if n := b.entries(); n != 601 {
			t.Fatalf("%d entries, want 601: the 600 held and the watched one", n)
		}
		if _, _, _, _, ok := b.Holder("new/599"); !ok {
			t.Fatal("a held key was forgotten")
		}
	})
}

// Stopping the last watch of a free key forgets it.
func TestUnwatchedFreeKeyForgotten(t *testing.T) {
	b := New()
	defer b.Close()
	_, stop := b.Watch("w")
	if n := b.entries(); n != 1 {
		t.Fatalf("%d entries while watched, want 1", n)
	}
	stop()
	if n := b.entries(); n != 0 {
		t.Fatalf("%d entries after the watch stopped, want 0", n)
	}
}

// A lapsed lease is forgotten as soon as anything looks at its key.
func TestLapsedLeaseForgottenWhenSeen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New()
		defer b.Close()
		first := acquire(t, b, "k", time.Second)
		time.Sleep(2 * time.Second)
		if _, _, _, _, ok := b.Holder("k"); ok {
			t.Fatal("a lapsed lease is reported held")
		}
		if n := b.entries(); n != 0 {
			t.Fatalf("%d entries after the lapsed lease was seen, want 0", n)
		}
		if again := acquire(t, b, "k", time.Second); again.Token <= first.Token {
			t.Fatalf("token %d after %d", again.Token, first.Token)
		}
	})
}
