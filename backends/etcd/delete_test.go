package etcd_test

import (
	"errors"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/etcdtest"
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
