package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/locktest"
	"github.com/ctxlock/ctxlock/backends/postgres"
	"github.com/ctxlock/ctxlock/internal/pgtest"
)

// Three Managers (each on its own Backend, as processes would be) contend
// for two keys while the server is killed and restarted, then frozen for
// longer than the TTL. The checker fails on any overlap of holds (ended
// when the holder unlocked or saw its expiry channel close) and on any
// fencing token that does not increase; and work goes on after each fault.
func TestChaosKillRestartFreezeNoOverlap(t *testing.T) {
	s := pgtest.Start(t)
	pool := s.Pool(t)
	table := randomName("chaos")
	const ttl = time.Second
	var managers []*ctxlock.Manager
	for range 3 {
		b := newBackend(t, pool, postgres.WithTable(table))
		managers = append(managers, newManager(t, b, ctxlock.WithDefaultLockOptions(ctxlock.WithTTL(ttl), ctxlock.WithDriftFactor(0.1))))
	}
	var (
		checker  locktest.Checker
		holds    atomic.Int64
		progress = make(chan struct{}, 1)
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for i := range 6 {
		m := managers[i%len(managers)]
		key := fmt.Sprint("k", i%2)
		wg.Go(func() {
			l := m.NewLock(key)
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				exp, err := l.Lock(ctx)
				cancel()
				if err != nil {
					continue // the server is down: try again
				}
				h := locktest.Hold{Key: key, Owner: fmt.Sprint("worker ", i), Token: l.Token(), Start: time.Now()}
				work := time.NewTimer(5 * time.Millisecond) // the "work" done under the lock
				select {
				case <-exp:
					h.End = time.Now()
				case <-work.C:
					h.End = time.Now()
					_ = l.Unlock()
				}
				work.Stop()
				checker.Record(h)
				holds.Add(1)
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	waitHolds := func(n int64, what string) {
		t.Helper()
		target := holds.Load() + n
		timeout := time.NewTimer(60 * time.Second)
		defer timeout.Stop()
		for holds.Load() < target {
			select {
			case <-progress:
			case <-timeout.C:
				t.Fatalf("no progress %s: %d holds", what, holds.Load())
			}
		}
	}
	waitHolds(20, "at start")
	s.Kill()
	s.Restart()
	waitHolds(20, "after a kill and restart")
	s.Stop()
	thaw := time.AfterFunc(ttl+ttl/2, s.Cont) // the fault schedule: frozen past the TTL
	defer func() {
		if thaw.Stop() {
			s.Cont()
		}
	}()
	waitHolds(20, "after a freeze")
	close(stop)
	wg.Wait()
	stop = make(chan struct{}) // for the deferred close
	n := checker.Check(t)
	t.Logf("%d holds checked", n)
}
