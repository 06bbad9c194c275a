package ctxlock_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// A report that comes while a TryLock's attempt is on its way, and covers
// the lease that attempt took, must be kept for the hold the attempt makes
// (DeleteNotifier: "A report that comes while the key is being acquired is
// kept for the hold that the attempt may make"), also when another Lock
// value of the Manager held the key, or made and ended a hold of it, while
// the answer was on its way. Else the TryLock adopts a lease the server
// has ended, and another owner takes the key while its expiry channel is
// open (Atomicity A) for up to a refresh interval.
func TestDeleteReportKeptAcrossAnotherLocalHold(t *testing.T) {
	for _, tc := range []struct {
		name string
		// whileHeld: the report comes while the other hold exists (once
		// dropped: only a key with no holder kept it); else it comes
		// before that hold is made (which once reset the kept report).
		whileHeld bool
	}{
		{name: "report while another hold exists", whileHeld: true},
		{name: "another hold made and ended after the report", whileHeld: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := &deleteNotifying{Backend: memory.New()}
				m := ctxlock.NewManager(b)
				defer m.Close(context.Background())
				gate := make(chan struct{})
				inHook := make(chan ctxlock.Lease, 1)
				var first atomic.Bool
				b.acquired = func(lease ctxlock.Lease) {
					if first.CompareAndSwap(false, true) {
						b.Evict(lease.Key) // the server ends the TryLock's lease early
						if !tc.whileHeld {
							b.reportBefore(lease.Key, lease.Token+1)
						}
						inHook <- lease
						<-gate
					}
				}
				type result struct {
					ok      bool
					expired <-chan struct{}
					err     error
				}
				tried := make(chan result, 1)
				try := m.NewLock("k", ctxlock.WithTTL(time.Hour))
				go func() {
					ok, expired, err := try.TryLock(context.Background())
					tried <- result{ok, expired, err}
				}()
				tryLease := <-inHook
				synctest.Wait()

				other := m.NewLock("k", ctxlock.WithTTL(time.Hour))
				if _, err := other.Lock(t.Context()); err != nil {
					t.Fatal(err)
				}
				if tc.whileHeld {
					// Reports the TryLock's lease's end (its token only).
					b.reportBefore("k", tryLease.Token+1)
					synctest.Wait()
				}
				if err := other.Unlock(); err != nil {
					t.Fatal(err)
				}
				synctest.Wait() // its release is done: the key is free on the server
				close(gate)
				r := <-tried
				if r.err != nil {
					t.Fatal(r.err)
				}
				if !r.ok {
					return // not adopted: fine
				}
				defer try.Unlock()
				synctest.Wait()
				select {
				case <-r.expired:
					if !errors.Is(try.Err(), ctxlock.ErrLost) {
						t.Errorf("Err = %v, want ErrLost", try.Err())
					}
					return
				default:
				}
				// The TryLock holds a lease the server ended: another
				// owner takes the key meanwhile.
				m2 := ctxlock.NewManager(b)
				defer m2.Close(context.Background())
				l2 := m2.NewLock("k", ctxlock.WithTTL(time.Hour))
				ok, _, err := l2.TryLock(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				if ok {
					defer l2.Unlock()
					select {
					case <-r.expired:
					default:
						t.Errorf("two holds of one key: TryLock (token %d, whose end was reported while acquiring) still holds, and another Manager took the key (token %d)", try.Token(), l2.Token())
					}
				}
			})
		})
	}
}

// DeleteNotifier: "Reports may be late, repeated or spurious: each costs at
// most one refresh". One report of unknown bound (math.MaxUint64) that comes
// while local Lock calls queue for the key must not cost a refresh to every
// later hold for as long as the key stays contended: a report is kept for
// the attempts in flight when it came, not for the key.
func TestDeleteReportUnknownBoundCostsOneRefreshUnderContention(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &deleteNotifying{Backend: memory.New()}
		m := ctxlock.NewManager(b)
		defer m.Close(context.Background())
		const workers, rounds = 3, 10
		locks := make([]ctxlock.Lock, workers)
		for i := range locks {
			locks[i] = m.NewLock("k", ctxlock.WithTTL(time.Hour))
		}
		if _, err := locks[0].Lock(t.Context()); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := 1; i < workers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range rounds {
					if _, err := locks[i].Lock(t.Context()); err != nil {
						t.Error(err)
						return
					}
					time.Sleep(time.Millisecond)
					_ = locks[i].Unlock()
				}
			}()
		}
		synctest.Wait() // both queue behind locks[0]
		b.report("k")   // spurious, of unknown bound: costs locks[0] one refresh
		synctest.Wait()
		base := b.extends.Load()
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = locks[0].Unlock()
			for range rounds - 1 {
				if _, err := locks[0].Lock(t.Context()); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(time.Millisecond)
				_ = locks[0].Unlock()
			}
		}()
		wg.Wait()
		holds := workers*rounds - 1
		if n := b.extends.Load() - base; n > 1 {
			t.Errorf("one spurious report cost %d more refreshes (%d holds after it, refresh interval 20m, each hold 1ms)", n, holds)
		}
	})
}
