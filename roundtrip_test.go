package ctxlock_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// roundTripBackend is a memory backend whose calls share round trips, as
// the Redis backend's do. While inFlight, AfterRoundTrip keeps f, and the
// test calls it (answer) as the backend would once its round trip was
// answered. It counts the releases sent alone and with an acquire.
type roundTripBackend struct {
	*memory.Backend
	mu       sync.Mutex
	inFlight bool
	after    []func()
	asked    int // AfterRoundTrip calls
	releases int // Release and ReleaseContended calls
	relocks  int
}

var _ ctxlock.RoundTripNotifier = (*roundTripBackend)(nil)

func newRoundTripBackend(inFlight bool) *roundTripBackend {
	return &roundTripBackend{Backend: memory.New(), inFlight: inFlight}
}

func (b *roundTripBackend) AfterRoundTrip(f func()) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.asked++
	if !b.inFlight {
		return false
	}
	b.after = append(b.after, f)
	return true
}

// answer ends the round trip in flight: the functions given meanwhile run.
func (b *roundTripBackend) answer() {
	b.mu.Lock()
	after := b.after
	b.after, b.inFlight = nil, false
	b.mu.Unlock()
	for _, f := range after {
		f()
	}
}

func (b *roundTripBackend) counts() (asked, pending, releases, relocks int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.asked, len(b.after), b.releases, b.relocks
}

func (b *roundTripBackend) Release(ctx context.Context, leases []ctxlock.Lease) []error {
	b.mu.Lock()
	b.releases++
	b.mu.Unlock()
	return b.Backend.Release(ctx, leases)
}

func (b *roundTripBackend) ReleaseContended(ctx context.Context, leases []ctxlock.Lease) ([]error, []bool) {
	b.mu.Lock()
	b.releases++
	b.mu.Unlock()
	return b.Backend.ReleaseContended(ctx, leases)
}

func (b *roundTripBackend) Relock(ctx context.Context, old ctxlock.Lease, req ctxlock.AcquireRequest) (ctxlock.Lease, bool, bool, error) {
	b.mu.Lock()
	b.relocks++
	b.mu.Unlock()
	return b.Backend.Relock(ctx, old, req)
}

func held(b *roundTripBackend, key string) bool {
	_, _, _, _, ok := b.Holder(key)
	return ok
}

// unlockDuringRoundTrip locks l (on key) and unlocks it while b has a round
// trip in flight, with nothing else for the scheduler to do, and checks that
// the release waits for the round trip (wantAsked AfterRoundTrip calls so
// far, one of them pending) and goes out once it ends.
func unlockDuringRoundTrip(t *testing.T, b *roundTripBackend, l ctxlock.Lock, key string, wantAsked int) {
	t.Helper()
	b.mu.Lock()
	b.inFlight = true
	b.mu.Unlock()
	if _, err := l.Lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	synctest.Wait()
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	synctest.Wait()
	if asked, pending, _, _ := b.counts(); asked != wantAsked || pending != 1 {
		t.Fatalf("%d AfterRoundTrip calls, %d pending; want %d, 1", asked, pending, wantAsked)
	}
	if !held(b, key) {
		t.Fatal("released before the round trip ended")
	}
	b.answer()
	synctest.Wait()
	if held(b, key) {
		t.Fatal("lease still held after the round trip ended")
	}
}

// While the backend has a round trip in flight, the releases of Unlocks
// wait for it to be answered (one call for all of them), and then go out
// without the clock moving.
func TestUnlockReleaseWaitsForRoundTrip(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newRoundTripBackend(true)
		m := ctxlock.NewManager(b)
		defer closeManager(t, m)
		ctx := context.Background()
		l1, l2 := m.NewLock("k1"), m.NewLock("k2")
		if _, err := l1.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := l2.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // the scheduler has nothing to do and sleeps
		start := time.Now()
		if err := l1.Unlock(); err != nil {
			t.Fatal(err)
		}
		if err := l2.Unlock(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if asked, pending, releases, _ := b.counts(); asked != 1 || pending != 1 || releases != 0 {
			t.Fatalf("before the round trip ended: %d AfterRoundTrip calls, %d pending, %d releases; want 1, 1, 0", asked, pending, releases)
		}
		if !held(b, "k1") || !held(b, "k2") {
			t.Fatal("a lease was released before the round trip ended")
		}
		b.answer()
		synctest.Wait()
		if held(b, "k1") || held(b, "k2") {
			t.Fatal("a lease still held after the round trip ended")
		}
		if _, _, releases, _ := b.counts(); releases != 1 {
			t.Fatalf("%d release calls; want 1 carrying both leases", releases)
		}
		if !time.Now().Equal(start) {
			t.Fatalf("the releases waited %v of the clock; want none", time.Since(start))
		}

		// Again, with no hold left whose timer could wake the scheduler:
		// the callback must have made way for a new one.
		unlockDuringRoundTrip(t, b, l1, "k1", 2)
	})
}

// A Lock of the key before the round trip ends takes the queued release and
// sends it with its acquire: nothing else is sent, then or later.
func TestRelockTakesReleaseBeforeRoundTripEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newRoundTripBackend(true)
		m := ctxlock.NewManager(b)
		defer closeManager(t, m)
		ctx := context.Background()
		l := m.NewLock("k")
		if _, err := l.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // the release waits, and the scheduler sleeps
		if _, err := l.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		b.answer()
		synctest.Wait()
		if _, _, releases, relocks := b.counts(); releases != 0 || relocks != 1 {
			t.Fatalf("%d releases, %d relocks; want 0, 1", releases, relocks)
		}
		owner, _, _, _, ok := b.Holder("k")
		if !ok || owner == "" {
			t.Fatal("the key is not held after the second Lock")
		}
	})
}

// With nothing in flight, an Unlock's release goes out at once.
func TestUnlockReleaseWithoutRoundTripInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newRoundTripBackend(false)
		m := ctxlock.NewManager(b)
		defer closeManager(t, m)
		l := m.NewLock("k")
		if _, err := l.Lock(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if held(b, "k") {
			t.Fatal("lease still held")
		}
		if asked, _, releases, _ := b.counts(); asked != 1 || releases != 1 {
			t.Fatalf("%d AfterRoundTrip calls, %d releases; want 1, 1", asked, releases)
		}

		// A declined call leaves the next Unlock free to ask again.
		unlockDuringRoundTrip(t, b, l, "k", 2)
	})
}

// Close waits for a release that waits for a round trip, and returns once
// the round trip ended and the release was sent.
func TestCloseWaitsForReleaseAfterRoundTrip(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newRoundTripBackend(true)
		m := ctxlock.NewManager(b)
		l := m.NewLock("k")
		if _, err := l.Lock(context.Background()); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
		closed := make(chan error, 1)
		go func() { closed <- m.Close(context.Background()) }()
		synctest.Wait()
		select {
		case err := <-closed:
			t.Fatalf("Close returned %v with a release pending", err)
		default:
		}
		b.answer()
		if err := <-closed; err != nil {
			t.Fatalf("Close: %v", err)
		}
		if held(b, "k") {
			t.Fatal("lease still held after Close")
		}
	})
}

// queueingRoundTrip is a roundTripBackend with a waiter queue that never
// tells anyone their turn: only an owner the backend queued can expect to
// hear from it.
type queueingRoundTrip struct{ *roundTripBackend }

func (b queueingRoundTrip) WatchWaiter(key, waiter string) (<-chan ctxlock.Handoff, func()) {
	return make(chan ctxlock.Handoff), func() {}
}

func (b queueingRoundTrip) Leave(ctx context.Context, key, waiter string) error { return nil }

// A Lock whose relock yields to an owner that does not queue (a TryLock the
// key refused meanwhile) is queued nowhere, so no turn will come: it takes
// the key again after a short yield, as after a contended release. It used
// to take itself for queued: it re-took the key at once, leaving the
// TryLock no chance (or, subscribed already, waited for a turn up to
// MaxRetryDelay with the key free).
func TestRelockYieldingToTryLockRetriesSoon(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newRoundTripBackend(false)
		b := queueingRoundTrip{rt}
		m, other := ctxlock.NewManager(b), ctxlock.NewManager(b)
		defer closeManager(t, other)
		defer closeManager(t, m)
		defer rt.answer()
		ctx := context.Background()
		l := m.NewLock("k")
		if _, err := l.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		if ok, _, err := other.NewLock("k").TryLock(ctx); ok || err != nil {
			t.Fatalf("TryLock of a held key = %v, %v; want false, nil", ok, err)
		}
		// A round trip in flight keeps Unlock's release pending, so that the
		// next Lock sends it with its acquire: a relock.
		synctest.Wait() // the scheduler sleeps
		rt.mu.Lock()
		rt.inFlight = true
		rt.mu.Unlock()
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		start := time.Now()
		if _, err := l.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited == 0 || waited > ctxlock.DefaultRetryDelay {
			t.Errorf("Lock after yielding to a TryLock waited %v; want a pause, at most the retry delay (%v)", waited, ctxlock.DefaultRetryDelay)
		}
		if asked, pending, releases, relocks := rt.counts(); relocks != 1 {
			t.Errorf("%d relocks (%d asked, %d pending, %d releases); want 1 (the test's premise)", relocks, asked, pending, releases)
		}
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
	})
}
