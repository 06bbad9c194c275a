package ctxlock_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// releaseBeforeWatch is a memory backend whose key is released by its holder
// just before the first Watch subscribes: the release lands between the
// waiter's refused attempt and its subscription, as it can on any backend.
type releaseBeforeWatch struct {
	*memory.Backend
	once    sync.Once
	release func()
}

func (b *releaseBeforeWatch) Watch(key string) (<-chan struct{}, func()) {
	b.once.Do(b.release)
	return b.Backend.Watch(key)
}

// A waiter that found the key held and then subscribed to release
// notifications must not miss a release that happened before its
// subscription: it looks again once subscribed, instead of sleeping a whole
// retry delay while the key is free.
func TestReleaseBeforeWatchNotMissed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memory.New()
		defer mem.Close()
		ctx := context.Background()
		other := ctxlock.NewManager(mem)
		defer closeManager(t, other)
		holder := other.NewLock("k", ctxlock.WithTTL(time.Hour))
		if _, err := holder.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		b := &releaseBeforeWatch{Backend: mem}
		b.release = func() {
			// The holder's release reaches the store now.
			owner, _, token, _, _ := mem.Holder("k")
			mem.Release(ctx, []ctxlock.Lease{{Key: "k", Owner: owner, Token: token}})
		}
		m := ctxlock.NewManager(b)
		defer closeManager(t, m)
		const retry = 10 * time.Second
		l := m.NewLock("k", ctxlock.WithRetryDelay(retry), ctxlock.WithTTL(time.Hour))
		start := time.Now()
		if _, err := l.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited >= retry/2 {
			t.Errorf("Lock took %v after the key was freed; want a look right after subscribing, not a retry delay", waited)
		}
		_ = l.Unlock()
		_ = holder.Unlock()
	})
}
