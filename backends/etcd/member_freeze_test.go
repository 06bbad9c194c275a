package etcd_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/etcdtest"
)

// One frozen follower of three does not end a hold whose client knows
// all three: each follower in turn is frozen (SIGSTOP) for longer than the
// TTL while the hold is refreshed. Whichever member the Backend's
// keep-alive stream and reads were on, a request stuck there is sent again
// to another member (Extend's hedges, within a twelfth of the TTL), and the
// expiry channel stays open throughout. Without the hedges, about one run
// in four (etcd 3.4 and 3.6) saw an Extend attempt after attempt land on
// the frozen member until the hold expired.
//
// The leader is not frozen here: a leader frozen past a lease's TTL can
// revoke that lease when it resumes, though another member renewed it
// meanwhile (etcd-io/etcd#15247; etcd's check of its leadership passes
// when its ticker fires right after the pause). Its hold then ends with
// ErrLost (see doc.go and TestDeleteByHandEndsHold).
func TestHoldSurvivesOneFrozenMember(t *testing.T) {
	c := etcdtest.StartCluster(t, 3)
	const ttl = 2 * time.Second
	m := newManager(t, newBackend(t, newClient(t, c.Endpoints()...)))
	l := m.NewLock("k", ctxlock.WithTTL(ttl))
	expired, err := l.Lock(testCtx(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	frozen := map[int]bool{}
	for len(frozen) < 2 {
		i := slices.IndexFunc(c.Members, func(s *etcdtest.Server) bool {
			j := slices.Index(c.Members, s)
			return !frozen[j] && c.Leader() != j
		})
		frozen[i] = true
		s := c.Members[i]
		s.Stop()
		select {
		case <-expired:
			s.Cont()
			t.Fatalf("the hold ended while member %d of 3, a follower, was frozen: %v", i, l.Err())
		case <-time.After(ttl + ttl/2): // the freeze, longer than the TTL
		}
		s.Cont()
		pollUntil(t, 10*time.Second, fmt.Sprintf("a leader after member %d's thaw", i), func() bool { return c.Leader() >= 0 })
	}
	if err := l.Unlock(); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
}
