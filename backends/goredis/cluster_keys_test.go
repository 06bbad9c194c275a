package goredis_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// In Cluster mode every key a Manager accepts — hash-tag braces anywhere in
// the key or the namespace, keys of MaxKeyLength — locks, queues a waiter
// and hands over correctly, with the lease and all its companion keys in
// one slot; a key the backend refuses (its tagged text starts with '}')
// fails at once with a permanent ErrInvalidKey, Lock and TryLock alike.
func TestClusterBraceKeysThroughManager(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	c := cl.Client(t)
	ctx := context.Background()
	long := strings.Repeat("k", ctxlock.MaxKeyLength)
	longBraces := strings.Repeat("{}", ctxlock.MaxKeyLength/2)
	cases := []struct{ ns, key string }{
		{"", "{"}, {"", "{}"}, {"", "{a}b"}, {"", "a{b}c"}, {"", "{{a}}"}, {"", "}{"},
		{"", "}"}, {"", "}x"}, {"", "a}"}, {"", "{a{b}c}"}, {"", "\x00}"},
		{"{", "}"}, {"{ns}", "x"}, {"}", "x"}, {"ns}", "{x}"}, {"{}", "x"},
		{"", long}, {"ns:", long}, {"", longBraces}, {"", "}" + long[1:]},
		{strings.Repeat("n", 200), longBraces},
	}
	for _, tc := range cases {
		b := newBackend(t, c)
		m := ctxlock.NewManager(b, ctxlock.WithNamespace(tc.ns))
		other := ctxlock.NewManager(newBackend(t, cl.Client(t)), ctxlock.WithNamespace(tc.ns))
		name := tc.ns + "|" + tc.key
		if len(name) > 40 {
			name = name[:40] + "..."
		}
		full := tc.ns + tc.key
		l := m.NewLock(tc.key, ctxlock.WithTTL(10*time.Second))
		if strings.HasPrefix(full, "}") {
			lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := l.Lock(lctx)
			cancel()
			if !errors.Is(err, ctxlock.ErrInvalidKey) || errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%q: Lock = %v; want ErrInvalidKey at once", name, err)
			}
			if _, _, err := l.TryLock(ctx); !errors.Is(err, ctxlock.ErrInvalidKey) {
				t.Errorf("%q: TryLock = %v; want ErrInvalidKey", name, err)
			}
		} else {
			checkClusterKey(t, ctx, name, b, c, full)
			if _, err := l.Lock(ctx); err != nil {
				t.Errorf("%q: Lock: %v", name, err)
				m.Close(ctx)
				other.Close(ctx)
				continue
			}
			first := l.Token()
			w := other.NewLock(tc.key)
			got := make(chan error, 1)
			go func() {
				_, err := w.Lock(ctx)
				got <- err
			}()
			// Wait until the waiter is queued: its queue key exists.
			lk, _, _ := b.Keys(full)
			deadline := time.Now().Add(waitLong)
			for c.Exists(ctx, lk+":q").Val() == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("%q: the waiter never queued", name)
				}
				time.Sleep(5 * time.Millisecond) // polling the server's state
			}
			if err := l.Unlock(); err != nil {
				t.Errorf("%q: Unlock: %v", name, err)
			}
			select {
			case err := <-got:
				if err != nil {
					t.Errorf("%q: waiter's Lock: %v", name, err)
				} else if w.Token() <= first {
					t.Errorf("%q: token %d after %d", name, w.Token(), first)
				}
			case <-time.After(waitLong):
				t.Fatalf("%q: the waiter never got the key", name)
			}
			_ = w.Unlock()
		}
		if err := m.Close(ctx); err != nil {
			t.Errorf("%q: Close: %v", name, err)
		}
		if err := other.Close(ctx); err != nil {
			t.Errorf("%q: Close: %v", name, err)
		}
	}
}

// checkClusterKey checks that every Redis key of full lands in one slot.
func checkClusterKey(t *testing.T, ctx context.Context, name string, b *goredis.Backend, c *redis.ClusterClient, full string) {
	t.Helper()
	lk, fk, _ := b.Keys(full)
	want := c.ClusterKeySlot(ctx, lk).Val()
	for _, k := range []string{fk, lk + ":wanted", lk + ":q", lk + ":qd", lk + ":hq", lk + ":hqd"} {
		if got := c.ClusterKeySlot(ctx, k).Val(); got != want {
			t.Errorf("%q: %q in slot %d, the lease in %d", name, k, got, want)
		}
	}
}
