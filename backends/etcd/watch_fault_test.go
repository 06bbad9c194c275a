package etcd_test

import (
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/etcdtest"
)

// watchBound bounds the wait for a watch signal.
const watchBound = 10 * time.Second

// The Backend's prefix watch resumes after the server is killed and
// restarted: its channel receives a signal for a release made by another
// Backend after the restart, and for a lapse (the lease expires and etcd
// deletes the key). Each signal is checked against the server: the key is
// gone when it arrives, so a spurious wake-up does not pass for one.
func TestWatchAfterRestart(t *testing.T) {
	s := etcdtest.Start(t)
	b := newBackend(t, newClient(t, s.Addr()))
	client2 := newClient(t, s.Addr())
	b2 := newBackend(t, client2)
	m2 := newManager(t, b2, ctxlock.WithDefaultLockOptions(ctxlock.WithTTL(time.Second)))
	ch, stop := b.Watch("k")
	defer stop()
	pollUntil(t, 10*time.Second, "the watch", func() bool { return watchInForce(t, b) })

	s.Kill()
	s.Restart()

	// gone reports whether key's etcd key no longer exists.
	gone := func(key string) bool {
		resp, err := client2.Get(testCtx(t, 5*time.Second), b.LockKey(key))
		if err != nil {
			t.Fatalf("Get %q: %v", key, err)
		}
		return len(resp.Kvs) == 0
	}
	// signalled waits for a signal on ch and checks that key is gone then.
	signalled := func(key, what string) {
		t.Helper()
		start := time.Now()
		select {
		case <-ch:
		case <-time.After(watchBound):
			t.Fatalf("no watch signal within %v of %s", watchBound, what)
		}
		if !gone(key) {
			t.Fatalf("watch signal %v after %s, but %q is still held", time.Since(start), what, key)
		}
		t.Logf("watch signal %v after %s", time.Since(start).Round(time.Millisecond), what)
	}

	// A release after the restart.
	l := m2.NewLock("k")
	if _, err := l.Lock(testCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 30*time.Second, "the watch after the restart", func() bool { return watchInForce(t, b) })
	drain(ch)
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	signalled("k", "a release after the restart")

	// A lapse: a hold nobody refreshes.
	drain(ch)
	if _, err := b2.Acquire(testCtx(t, 10*time.Second), ctxlock.AcquireRequest{Key: "k", Owner: "lapsing", TTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	if gone("k") {
		t.Fatal("the key is not held after Acquire")
	}
	signalled("k", "a hold of 1s left to lapse")
}
