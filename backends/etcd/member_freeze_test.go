package etcd_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/etcdtest"
)

// One frozen member of three does not end a hold whose client knows all
// three: each member in turn is frozen (SIGSTOP) for longer than the TTL
// while the hold is refreshed. Whichever member the Backend's keep-alive
// stream and reads were on, the refresh that hangs there gives up in time
// for a retry through another member, and the expiry channel stays open
// throughout.
func TestHoldSurvivesOneFrozenMember(t *testing.T) {
	c := etcdtest.StartCluster(t, 3)
	const ttl = 2 * time.Second
	m := newManager(t, newBackend(t, newClient(t, c.Endpoints()...)))
	l := m.NewLock("k", ctxlock.WithTTL(ttl))
	expired, err := l.Lock(testCtx(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range c.Members {
		s.Stop()
		select {
		case <-expired:
			s.Cont()
			t.Fatalf("the hold ended while member %d of 3 was frozen: %v", i, l.Err())
		case <-time.After(ttl + ttl/2): // the freeze, longer than the TTL
		}
		s.Cont()
		pollUntil(t, 10*time.Second, fmt.Sprintf("a leader after member %d's thaw", i), func() bool { return c.Leader() >= 0 })
	}
	if err := l.Unlock(); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
}
