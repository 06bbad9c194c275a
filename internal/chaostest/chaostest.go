// Package chaostest is a contention workload for fault tests of a backend:
// workers on several Managers (processes, each with its own Backend) lock
// two keys over and over while a schedule of faults is injected into the
// server, and every hold is checked for mutual exclusion and increasing
// fencing tokens (backends/locktest.Checker).
package chaostest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/locktest"
)

// Workload sizes.
const (
	// Keys is the number of keys the workers contend for.
	Keys = 2
	// Workers is the number of goroutines that lock; worker i runs on
	// Manager i mod len(managers) and locks key i mod Keys.
	Workers = 6
	// HoldsPerPhase is the number of holds that must end after the start
	// and after each fault.
	HoldsPerPhase = 20
	// PhaseTimeout bounds the wait for a phase's holds.
	PhaseTimeout = 60 * time.Second
	// lockTimeout bounds one Lock call (the server may be down).
	lockTimeout = 3 * time.Second
	// work is how long a worker keeps a lock it got, but for the long
	// holder.
	work = 5 * time.Millisecond
	// longHolds is how many TTLs worker 0, the long holder, keeps a lock
	// it got (refreshed by its Manager): its holds are live when faults
	// strike, so a fault must end them (expiry) or leave them valid, never
	// let another worker in while they last.
	longHolds = 2
)

// Step is one fault of the schedule. Inject puts the fault in force and
// returns; the workload then waits for HoldsPerPhase holds, so a fault that
// lasts (a freeze thawed by a timer) must end on its own. Inject may
// register cleanups on t (to undo a fault that is still in force when the
// test fails).
type Step struct {
	// Name says what the fault is ("a kill and restart"), for failures.
	Name   string
	Inject func(t testing.TB, ttl time.Duration)
}

// KillRestart is a crash of the server and its restart: Inject returns
// once restart has.
func KillRestart(kill, restart func()) Step {
	return Step{Name: "a kill and restart", Inject: func(testing.TB, time.Duration) {
		kill()
		restart()
	}}
}

// Freeze freezes the server (SIGSTOP) for one and a half TTLs: longer than
// any lease granted before, so that holders must see their expiry channel
// close and nobody may have the key while a frozen holder believes it
// holds it. A timer thaws it; Inject returns at once.
func Freeze(stop, cont func()) Step {
	return Step{Name: "a freeze past the TTL", Inject: func(t testing.TB, ttl time.Duration) {
		stop()
		thaw := time.AfterFunc(ttl+ttl/2, cont)
		t.Cleanup(func() {
			if thaw.Stop() {
				cont()
			}
		})
	}}
}

// Result counts what Run saw.
type Result struct {
	Holds   int // holds checked
	Expired int // holds that ended with their expiry channel closing
}

// Run has Workers workers lock Keys keys on managers (with their default
// lock options: the caller sets the TTL, ttl, on them; worker 0 keeps each
// lock for 2 TTLs, the others for 5ms) until HoldsPerPhase
// holds have ended, then injects each step in turn and waits for
// HoldsPerPhase more after each. It fails t when a phase makes no progress
// within PhaseTimeout, or when the checker finds two holds of a key that
// overlap or a token that does not increase. A hold ends when its worker
// unlocks it or sees its expiry channel close.
func Run(t *testing.T, managers []*ctxlock.Manager, ttl time.Duration, steps ...Step) Result {
	t.Helper()
	if len(managers) == 0 {
		t.Fatal("chaostest: no Managers")
	}
	var (
		checker  locktest.Checker
		holds    atomic.Int64
		expired  atomic.Int64
		progress = make(chan struct{}, 1)
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for i := range Workers {
		m := managers[i%len(managers)]
		key := fmt.Sprint("k", i%Keys)
		wg.Go(func() {
			l := m.NewLock(key)
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), lockTimeout)
				exp, err := l.Lock(ctx)
				cancel()
				if err != nil {
					continue // the server is down: try again
				}
				h := locktest.Hold{Key: key, Owner: fmt.Sprint("worker ", i), Token: l.Token(), Start: time.Now()}
				d := work
				if i == 0 {
					d = longHolds * ttl
				}
				timer := time.NewTimer(d) // the "work" done under the lock
				select {
				case <-exp:
					h.End = time.Now()
					expired.Add(1)
				case <-timer.C:
					h.End = time.Now()
					_ = l.Unlock()
				}
				timer.Stop()
				checker.Record(h)
				holds.Add(1)
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		})
	}
	var stopOnce sync.Once
	halt := func() {
		stopOnce.Do(func() {
			close(stop)
			wg.Wait()
		})
	}
	defer halt()
	waitHolds := func(what string) {
		t.Helper()
		target := holds.Load() + HoldsPerPhase
		timeout := time.NewTimer(PhaseTimeout)
		defer timeout.Stop()
		for holds.Load() < target {
			select {
			case <-progress:
			case <-timeout.C:
				t.Fatalf("no progress %s: %d holds", what, holds.Load())
			}
		}
	}
	waitHolds("at start")
	for _, s := range steps {
		s.Inject(t, ttl)
		waitHolds("after " + s.Name)
	}
	halt()
	r := Result{Holds: checker.Check(t), Expired: int(expired.Load())}
	t.Logf("%d holds checked, %d ended by expiry", r.Holds, r.Expired)
	return r
}
