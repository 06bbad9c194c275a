package etcd_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/etcdtest"
	"github.com/ctxlock/ctxlock/internal/faultproxy"
)

// A key deleted on the server under a live hold (here by hand; a leader
// that stalled past the TTL can revoke a live lease when it resumes,
// etcd-io/etcd#15247) ends the hold with ErrLost at once: the Backend's
// watch reports the deletion (ctxlock.DeleteNotifier) and the Manager
// refreshes the hold. Without the report it would end at its next refresh,
// 20s later for this TTL, while another owner could take the key.
func TestDeleteByHandEndsHold(t *testing.T) {
	s := etcdtest.Start(t)
	client := newClient(t, s.Addr())
	b := newBackend(t, client)
	m := newManager(t, b)
	l := m.NewLock("k", ctxlock.WithTTL(time.Minute))
	expired, err := l.Lock(testCtx(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	other := newManager(t, b).NewLock("k")
	if ok, _, err := other.TryLock(testCtx(t, 10*time.Second)); ok || err != nil {
		t.Fatalf("TryLock of a held key = %v, %v; want false, nil", ok, err)
	}
	if _, err := client.Delete(testCtx(t, 10*time.Second), b.LockKey("k")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-expired:
	case <-time.After(10 * time.Second):
		t.Fatal("the hold outlived its key by 10s")
	}
	if !errors.Is(l.Err(), ctxlock.ErrLost) {
		t.Errorf("Err = %v, want ErrLost", l.Err())
	}
}

// Each deletion is reported with its revision: above the token of the
// lease that ended (the revision that created its key), and at or below
// the token of any later lease of the key, so the Manager can tell the
// end of an earlier hold from the end of its own.
func TestNotifyDeletesRevisions(t *testing.T) {
	s := etcdtest.Start(t)
	client := newClient(t, s.Addr())
	b := newBackend(t, client)
	type report struct {
		key    string
		before uint64
	}
	reports := make(chan report, 16)
	stop := b.NotifyDeletes(func(key string, before uint64) { reports <- report{key, before} })
	defer stop()
	next := func() report {
		t.Helper()
		select {
		case r := <-reports:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("no deletion reported within 10s")
			return report{}
		}
	}
	ctx := testCtx(t, 30*time.Second)
	acquire := func(owner string) ctxlock.Lease {
		t.Helper()
		lease, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: "k", Owner: owner, TTL: time.Minute, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return lease
	}

	first := acquire("first")
	if errs := b.Release(ctx, []ctxlock.Lease{first}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	released := next()
	second := acquire("second")
	if released.key != "k" || released.before <= first.Token || released.before > second.Token {
		t.Errorf("the release of the lease with token %d was reported as %+v; want key k and %d < before <= %d (the next lease's token)",
			first.Token, released, first.Token, second.Token)
	}
	if _, err := client.Delete(ctx, b.LockKey("k")); err != nil { // by hand
		t.Fatal(err)
	}
	deleted := next()
	if deleted.key != "k" || deleted.before <= second.Token {
		t.Errorf("the deletion of the lease with token %d was reported as %+v; want key k and before > %d", second.Token, deleted, second.Token)
	}
	select {
	case r := <-reports:
		t.Errorf("a third report, of two deletions: %+v", r)
	default:
	}
	if errs := b.Release(ctx, []ctxlock.Lease{second}); errs[0] != nil {
		t.Fatal(errs[0])
	}
}

// A watch that finds its resume revision compacted away when it reconnects
// resumes at the compaction, not at the present: deletions made after the
// compaction, while the Backend was cut off, are still reported.
func TestNotifyDeletesAfterCompaction(t *testing.T) {
	s := etcdtest.Start(t)
	proxy := faultproxy.Start(t, s.Addr())
	b := newBackend(t, newClient(t, proxy.Addr()))
	direct := newClient(t, s.Addr())
	reports := make(chan string, 16)
	stop := b.NotifyDeletes(func(key string, before uint64) { reports <- key })
	defer stop()
	pollUntil(t, 10*time.Second, "the watch", func() bool { return watchInForce(t, b) })
	next := func(want string) {
		t.Helper()
		for {
			select {
			case key := <-reports:
				if key == want {
					return
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("the deletion of %q was not reported within 10s", want)
			}
		}
	}
	ctx := testCtx(t, 30*time.Second)
	if _, err := direct.Put(ctx, b.LockKey("before"), "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Delete(ctx, b.LockKey("before")); err != nil {
		t.Fatal(err)
	}
	next("before")

	proxy.Reset() // the Backend is cut off
	var last int64
	for range 5 {
		resp, err := direct.Put(ctx, "unwatched", "x")
		if err != nil {
			t.Fatal(err)
		}
		last = resp.Header.Revision
	}
	if _, err := direct.Compact(ctx, last); err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Put(ctx, b.LockKey("gap"), "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Delete(ctx, b.LockKey("gap")); err != nil {
		t.Fatal(err)
	}
	proxy.Pass()
	next("gap")
}

// A watch that began at "now" and saw no deletion before the server
// dropped it (here for losing its leader: the watch requires one) resumes
// after the revision it began at, not at a later now: a deletion made
// while it could not reconnect is still reported.
func TestNotifyDeletesAfterLeaderLoss(t *testing.T) {
	c := etcdtest.StartCluster(t, 3)
	const watched = 0
	proxy := faultproxy.Start(t, c.Members[watched].Addr())
	b := newBackend(t, newClient(t, proxy.Addr()))
	direct := newClient(t, c.Endpoints()...)
	reports := make(chan string, 16)
	stop := b.NotifyDeletes(func(key string, before uint64) { reports <- key })
	defer stop()
	pollUntil(t, 10*time.Second, "the watch", func() bool { return watchInForce(t, b) })

	// The watched member loses its leader, and the watch with it.
	others := []*etcdtest.Server{c.Members[1], c.Members[2]}
	for _, s := range others {
		s.Stop()
	}
	resumed := false
	defer func() {
		if !resumed {
			for _, s := range others {
				s.Cont()
			}
		}
	}()
	pollUntil(t, 30*time.Second, "the watch's end for want of a leader", func() bool {
		conds, _ := b.Health(testCtx(t, 5*time.Second))
		for _, c := range conds {
			if strings.Contains(c, "watch reconnecting") {
				return true
			}
		}
		return false
	})
	proxy.Reset() // and it cannot come back yet
	for _, s := range others {
		s.Cont()
	}
	resumed = true
	ctx := testCtx(t, 30*time.Second)
	if _, err := direct.Put(ctx, b.LockKey("gap"), "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Delete(ctx, b.LockKey("gap")); err != nil {
		t.Fatal(err)
	}
	proxy.Pass()
	for {
		select {
		case key := <-reports:
			if key == "gap" {
				return
			}
		case <-time.After(20 * time.Second):
			t.Fatal(`the deletion of "gap" was not reported within 20s of the watch's return`)
		}
	}
}
