package ctxlock_test

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// deleteNotifying is a memory store that implements ctxlock.DeleteNotifier
// by hand: the test reports deletions with report. Extend can be held up
// (hold) to report a deletion while a refresh is in flight, and acquired
// runs between an Acquire and its answer.
type deleteNotifying struct {
	*memory.Backend
	mu       sync.Mutex
	f        func(key string, before uint64)
	stopped  bool
	extends  atomic.Int32
	hold     chan chan struct{}  // when set, each Extend waits for a channel from it and closes it after
	acquired func(ctxlock.Lease) // when set, called with each lease Acquire took, before it answers
}

func (b *deleteNotifying) NotifyDeletes(f func(key string, before uint64)) (stop func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.f = f
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.stopped = true
	}
}

// report tells the Manager that every lease of key ended (a backend that
// cannot tell which).
func (b *deleteNotifying) report(key string) { b.reportBefore(key, math.MaxUint64) }

// reportBefore tells the Manager that the leases of key with a token below
// before ended.
func (b *deleteNotifying) reportBefore(key string, before uint64) {
	b.mu.Lock()
	f := b.f
	b.mu.Unlock()
	f(key, before)
}

func (b *deleteNotifying) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	lease, err := b.Backend.Acquire(ctx, req)
	if err == nil && b.acquired != nil {
		b.acquired(lease)
	}
	return lease, err
}

func (b *deleteNotifying) Extend(ctx context.Context, leases []ctxlock.Lease, ttl time.Duration) []error {
	b.extends.Add(1)
	errs := b.Backend.Extend(ctx, leases, ttl)
	if b.hold != nil {
		release := <-b.hold
		defer close(release)
	}
	return errs
}

// A hold whose key the backend reports deleted is refreshed at once, not
// at its next refresh a third of the TTL later: a lease the server ended
// early ends the hold (ErrLost) within a round trip. A spurious report
// costs one refresh and nothing else; Close unregisters.
func TestDeleteNotifierRefreshesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &deleteNotifying{Backend: memory.New()}
		m := ctxlock.NewManager(b)
		l := m.NewLock("k", ctxlock.WithTTL(time.Hour))
		expired, err := l.Lock(t.Context())
		if err != nil {
			t.Fatal(err)
		}

		b.report("k") // spurious: the lease is still there
		synctest.Wait()
		if n := b.extends.Load(); n != 1 {
			t.Fatalf("%d Extend calls after a report, want 1", n)
		}
		select {
		case <-expired:
			t.Fatalf("a spurious report ended the hold: %v", l.Err())
		default:
		}
		b.report("other") // a key not held here
		synctest.Wait()
		if n := b.extends.Load(); n != 1 {
			t.Fatalf("%d Extend calls after a report of a key not held, want still 1", n)
		}

		start := time.Now()
		b.Evict("k") // the server ends the lease early
		b.report("k")
		<-expired
		if waited := time.Since(start); waited != 0 {
			t.Errorf("the hold ended %v after the report, want at once (fake time)", waited)
		}
		if !errors.Is(l.Err(), ctxlock.ErrLost) {
			t.Errorf("Err = %v, want ErrLost", l.Err())
		}
		if err := m.Close(t.Context()); err != nil {
			t.Fatal(err)
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		if !b.stopped {
			t.Error("Close did not unregister the Manager's function")
		}
	})
}

// A report that comes while the hold's refresh is in flight (whose answer
// may predate the deletion) is followed by another refresh as soon as that
// one is answered.
func TestDeleteNotifierDuringRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &deleteNotifying{Backend: memory.New(), hold: make(chan chan struct{})}
		m := ctxlock.NewManager(b)
		defer m.Close(context.Background())
		const ttl = 3 * time.Hour
		l := m.NewLock("k", ctxlock.WithTTL(ttl))
		expired, err := l.Lock(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(ttl / 3) // the first refresh is due, and waits in Extend
		synctest.Wait()
		if n := b.extends.Load(); n != 1 {
			t.Fatalf("%d Extend calls at the refresh, want 1", n)
		}
		b.Evict("k") // after the refresh read the store: it answers "renewed"
		b.report("k")
		answered := make(chan struct{})
		b.hold <- answered
		<-answered
		start := time.Now()
		b.hold <- make(chan struct{}) // the second refresh
		<-expired
		if waited := time.Since(start); waited != 0 {
			t.Errorf("the second refresh came %v after the first was answered, want at once (fake time)", waited)
		}
		if !errors.Is(l.Err(), ctxlock.ErrLost) {
			t.Errorf("Err = %v, want ErrLost", l.Err())
		}
		if n := b.extends.Load(); n != 2 {
			t.Errorf("%d Extend calls, want 2", n)
		}
	})
}

// Holds made WithoutRefresh are never refreshed, reports or not.
func TestDeleteNotifierLeavesUnrefreshedHolds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &deleteNotifying{Backend: memory.New()}
		m := ctxlock.NewManager(b)
		defer m.Close(context.Background())
		l := m.NewLock("k", ctxlock.WithTTL(time.Hour), ctxlock.WithoutRefresh())
		if _, err := l.Lock(t.Context()); err != nil {
			t.Fatal(err)
		}
		b.report("k")
		synctest.Wait()
		if n := b.extends.Load(); n != 0 {
			t.Errorf("%d Extend calls for a hold WithoutRefresh, want 0", n)
		}
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
	})
}

// A report of the end of leases older than the hold (typically the release
// of the key's previous hold, heard after the key was locked again) costs
// no refresh; one that covers the hold's token does.
func TestDeleteNotifierIgnoresEarlierLeases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &deleteNotifying{Backend: memory.New()}
		m := ctxlock.NewManager(b)
		defer m.Close(context.Background())
		l := m.NewLock("k", ctxlock.WithTTL(time.Hour))
		if _, err := l.Lock(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // the release is done
		expired, err := l.Lock(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		token := l.Token()
		b.reportBefore("k", token) // the first hold's release, heard late
		synctest.Wait()
		if n := b.extends.Load(); n != 0 {
			t.Fatalf("%d Extend calls after the report of an earlier lease's end, want 0", n)
		}
		b.Evict("k")
		b.reportBefore("k", token+1)
		<-expired
		if !errors.Is(l.Err(), ctxlock.ErrLost) {
			t.Errorf("Err = %v, want ErrLost", l.Err())
		}
		if n := b.extends.Load(); n != 1 {
			t.Errorf("%d Extend calls, want 1", n)
		}
	})
}

// A report that comes while the key is being acquired, and covers the
// lease the attempt took, is kept: the hold is refreshed as soon as it is
// made, and ends (ErrLost) at once, not a refresh interval later. One of
// an earlier lease's end is not.
func TestDeleteNotifierDuringAcquire(t *testing.T) {
	for _, tc := range []struct {
		name     string
		evict    bool // the server ended the attempt's lease before its answer came
		before   func(token uint64) uint64
		extends  int32
		wantLost bool
	}{
		{name: "the attempt's lease ended", evict: true, before: func(token uint64) uint64 { return token + 1 }, extends: 1, wantLost: true},
		{name: "an earlier lease ended", before: func(token uint64) uint64 { return token }, extends: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := &deleteNotifying{Backend: memory.New()}
				m := ctxlock.NewManager(b)
				defer m.Close(context.Background())
				b.acquired = func(lease ctxlock.Lease) {
					if tc.evict {
						b.Evict(lease.Key)
					}
					b.reportBefore(lease.Key, tc.before(lease.Token))
				}
				l := m.NewLock("k", ctxlock.WithTTL(time.Hour))
				start := time.Now()
				expired, err := l.Lock(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				synctest.Wait()
				if n := b.extends.Load(); n != tc.extends {
					t.Errorf("%d Extend calls, want %d", n, tc.extends)
				}
				select {
				case <-expired:
					if !tc.wantLost {
						t.Fatalf("the hold ended: %v", l.Err())
					}
					if !errors.Is(l.Err(), ctxlock.ErrLost) {
						t.Errorf("Err = %v, want ErrLost", l.Err())
					}
					if waited := time.Since(start); waited != 0 {
						t.Errorf("the hold ended %v after Lock, want at once (fake time)", waited)
					}
				default:
					if tc.wantLost {
						t.Fatal("the hold whose lease ended during its acquire is still held")
					}
				}
			})
		})
	}
}

// A report that cannot tell which leases ended (math.MaxUint64), heard
// while the key is being acquired, costs the hold that the attempt makes
// one refresh, and later holds of the key none.
func TestDeleteNotifierUnknownReportDuringAcquire(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &deleteNotifying{Backend: memory.New()}
		m := ctxlock.NewManager(b)
		defer m.Close(context.Background())
		reported := false
		b.acquired = func(lease ctxlock.Lease) {
			if !reported {
				reported = true
				b.report(lease.Key)
			}
		}
		l := m.NewLock("k", ctxlock.WithTTL(time.Hour))
		for i := range 3 {
			expired, err := l.Lock(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
			if n := b.extends.Load(); n != 1 {
				t.Fatalf("hold %d: %d Extend calls in all, want 1 (the first hold's)", i, n)
			}
			select {
			case <-expired:
				t.Fatalf("hold %d ended: %v", i, l.Err())
			default:
			}
			// Locked again at once: the key's state, and the report it
			// kept, outlive the release still on its way.
			if err := l.Unlock(); err != nil {
				t.Fatal(err)
			}
		}
	})
}
