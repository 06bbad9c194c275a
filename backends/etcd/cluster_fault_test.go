package etcd_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/locktest"
	"github.com/ctxlock/ctxlock/internal/chaostest"
	"github.com/ctxlock/ctxlock/internal/etcdtest"
)

// A three-member cluster loses its leader while three Managers (each its
// own Backend and client, every client given all three endpoints) contend
// for two keys; a new leader is elected, work goes on, and the old leader
// is restarted later, after which work goes on again. Meanwhile a hold
// taken before the kill is contended by another Manager: it either stays
// valid throughout (its refreshes succeed) or its expiry channel closes,
// and the contender gets the key only after that. The checkers find no
// overlap and increasing tokens.
func TestClusterLeaderKill(t *testing.T) {
	c := etcdtest.StartCluster(t, 3)
	const ttl = time.Second
	var managers []*ctxlock.Manager
	for range 3 {
		b := newBackend(t, newClient(t, c.Endpoints()...))
		managers = append(managers, newManager(t, b, ctxlock.WithDefaultLockOptions(ctxlock.WithTTL(ttl), ctxlock.WithDriftFactor(0.1))))
	}

	// The hold taken before the kill, and its contender.
	holder := managers[0].NewLock("long")
	expired, err := holder.Lock(testCtx(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	holdStart, holdToken := time.Now(), holder.Token()
	expiredAt := make(chan time.Time, 1)
	go func() {
		<-expired
		expiredAt <- time.Now()
	}()
	contended := make(chan locktest.Hold, 1)
	stopContender := make(chan struct{})
	contenderDone := make(chan struct{})
	go func() {
		defer close(contenderDone)
		l := managers[1].NewLock("long")
		for {
			select {
			case <-stopContender:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := l.Lock(ctx)
			cancel()
			if err != nil {
				continue
			}
			h := locktest.Hold{Key: "long", Owner: "contender (m1)", Token: l.Token(), Start: time.Now()}
			h.End = time.Now()
			_ = l.Unlock()
			contended <- h
			return
		}
	}()
	defer func() {
		close(stopContender)
		<-contenderDone
	}()

	killed := -1
	kill := chaostest.Step{Name: "the leader's kill and a new leader's election", Inject: func(t testing.TB, ttl time.Duration) {
		killed = c.Leader()
		if killed < 0 {
			t.Fatal("no leader before the kill")
		}
		c.Members[killed].Kill()
		pollUntil(t, 30*time.Second, "a new leader", func() bool {
			l := c.Leader()
			return l >= 0 && l != killed
		})
		t.Logf("killed the leader, member %d; member %d leads now", killed, c.Leader())
	}}
	restart := chaostest.Step{Name: "the old leader's restart", Inject: func(t testing.TB, ttl time.Duration) {
		c.Members[killed].Restart()
	}}
	chaostest.Run(t, managers, ttl, kill, restart)

	// The hold taken before the kill: still valid, or expired, and never
	// shared with the contender.
	var end time.Time
	select {
	case end = <-expiredAt:
		if err := holder.Err(); !errors.Is(err, ctxlock.ErrExpired) && !errors.Is(err, ctxlock.ErrLost) {
			t.Errorf("the hold's expiry channel closed with Err() = %v; want ErrExpired or ErrLost", err)
		}
		t.Logf("the hold taken before the kill expired: %v", holder.Err())
	default:
		if err := holder.Err(); err != nil {
			t.Errorf("the hold's expiry channel is open but Err() = %v", err)
		}
		end = time.Now() // a contender's hold that started before overlaps
		t.Logf("the hold taken before the kill stayed valid through %v", end.Sub(holdStart))
		if err := holder.Unlock(); err != nil {
			t.Errorf("Unlock of the long hold: %v", err)
		}
	}
	var check locktest.Checker
	check.Record(locktest.Hold{Key: "long", Owner: "holder (m0, before the kill)", Token: holdToken, Start: holdStart, End: end})
	select {
	case h := <-contended:
		check.Record(h)
	case <-time.After(30 * time.Second):
		t.Fatal("the contender did not get the key within 30s of the hold's end")
	}
	if n := check.Check(t); n != 2 {
		t.Fatalf("checked %d holds of the long key, want 2", n)
	}
}
