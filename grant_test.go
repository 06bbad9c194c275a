package ctxlock_test

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// queueStub is a memory store with a minimal WaiterQueue: the test
// grants the key to the last waiter that was refused, as goredis does on a
// release (a lease owned by GrantOwner(waiter, token), TTL at most 3s).
type queueStub struct {
	*memory.Backend
	mu      sync.Mutex
	waiter  string
	turns   map[string]chan ctxlock.Handoff
	extends atomic.Int64
	tries   atomic.Int64 // Acquire calls
	// stopGate, when set, makes the WatchWaiter stop functions block until
	// it is closed (a slow unsubscribe).
	stopGate chan struct{}
}

func (b *queueStub) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	b.tries.Add(1)
	lease, err := b.Backend.Acquire(ctx, req)
	if errors.Is(err, ctxlock.ErrHeld) && req.Waiter != "" {
		b.mu.Lock()
		b.waiter = req.Waiter
		b.mu.Unlock()
	}
	return lease, err
}

func (b *queueStub) Extend(ctx context.Context, ls []ctxlock.Lease, ttl time.Duration) []error {
	b.extends.Add(1)
	return b.Backend.Extend(ctx, ls, ttl)
}

func (b *queueStub) WatchWaiter(key, waiter string) (<-chan ctxlock.Handoff, func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.turns == nil {
		b.turns = map[string]chan ctxlock.Handoff{}
	}
	ch := make(chan ctxlock.Handoff, 1)
	b.turns[waiter] = ch
	gate := b.stopGate
	return ch, func() {
		if gate != nil {
			<-gate
		}
	}
}

func (b *queueStub) Leave(ctx context.Context, key, waiter string) error { return nil }

// grant releases holder's lease and grants key to the queued waiter for ttl.
func (b *queueStub) grant(t *testing.T, key string, holder ctxlock.Lease, ttl time.Duration) {
	_, tok, ch := b.grantQuietly(t, key, holder, ttl)
	ch <- ctxlock.Handoff{Token: tok, TTL: ttl}
}

// grantQuietly is grant without the notice: it returns the waiter, the
// grant's token and the waiter's turns, for the test to tell it when it
// likes.
func (b *queueStub) grantQuietly(t *testing.T, key string, holder ctxlock.Lease, ttl time.Duration) (waiter string, token uint64, turns chan ctxlock.Handoff) {
	t.Helper()
	b.Backend.Release(context.Background(), []ctxlock.Lease{holder})
	b.mu.Lock()
	w, ch := b.waiter, b.turns[b.waiter]
	b.mu.Unlock()
	tok := holder.Token + 1
	l, err := b.Backend.Acquire(context.Background(), ctxlock.AcquireRequest{
		Key: key, Owner: ctxlock.GrantOwner(w, tok), TTL: ttl, Timeout: time.Second})
	if err != nil || l.Token != tok {
		t.Fatalf("grant: %v %+v", err, l)
	}
	return w, tok, ch
}

// leaseElsewhere takes key on the store for an owner outside the test's
// Managers, for an hour.
func leaseElsewhere(t *testing.T, b *memory.Backend, key string) ctxlock.Lease {
	t.Helper()
	holder, err := b.Acquire(context.Background(), ctxlock.AcquireRequest{
		Key: key, Owner: "elsewhere", TTL: time.Hour, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return holder
}

// A hold granted a short lease (a WaiterQueue hand-off, 3s as goredis's
// DefaultWaiterKeep) by a healthy backend is refreshed before the grant's
// validity ends. Its validity must come from the grant's own TTL: the drift
// allowance of the lock's 250s TTL (2.5s) left the grant 0.5s, past which
// its first refresh (at ttl/3, 1s) was due, and the hold expired at 1s,
// after its own deadline, without one Extend sent.
func TestShortGrantRefreshedBeforeItsValidityEnds(t *testing.T) {
	grantOutlivedByHold(t, 3*time.Second, ctxlock.WithTTL(250*time.Second), ctxlock.WithRefreshInterval(2*time.Second))
}

// A grant of a few milliseconds (a tiny waiter keep) is refreshed within
// its validity too, although a third of its TTL (1ms of 3ms) is more than
// the 0.97ms the drift allowance leaves: the first refresh is due at half
// the validity at the latest.
func TestTinyGrantRefreshedBeforeItsValidityEnds(t *testing.T) {
	grantOutlivedByHold(t, 3*time.Millisecond, ctxlock.WithTTL(10*time.Second))
}

// grantOutlivedByHold has a Lock with opts granted a lease of grantTTL by
// a healthy backend, and checks that the hold outlives the grant.
func grantOutlivedByHold(t *testing.T, grantTTL time.Duration, opts ...ctxlock.LockOption) {
	synctest.Test(t, func(t *testing.T) {
		b := &queueStub{Backend: memory.New()}
		holder := leaseElsewhere(t, b.Backend, "k")
		m := ctxlock.NewManager(b)
		defer m.Close(context.Background())
		l := m.NewLock("k", opts...)
		expired := lockOnGrant(t, l, func() { b.grant(t, "k", holder, grantTTL) })
		granted := time.Now()
		// The backend stays healthy: the hold must outlive its grant via a refresh.
		select {
		case <-expired:
			t.Fatalf("hold ended %v after the grant on a healthy backend: %v (Extend calls: %d)",
				time.Since(granted), l.Err(), b.extends.Load())
		case <-time.After(grantTTL + 2*time.Second):
		}
		l.Unlock()
	})
}

// lockOnGrant calls l.Lock, which the backend refuses and queues, then
// grant (inside a synctest bubble), and returns the hold's expiry channel.
func lockOnGrant(t *testing.T, l ctxlock.Lock, grant func()) <-chan struct{} {
	t.Helper()
	type res struct {
		ch  <-chan struct{}
		err error
	}
	done := make(chan res, 1)
	go func() { ch, err := l.Lock(context.Background()); done <- res{ch, err} }()
	synctest.Wait() // refused, queued, listening for its turn
	grant()
	r := <-done
	if r.err != nil {
		t.Fatalf("Lock: %v", r.err)
	}
	return r.ch
}

func (b *queueStub) queuedWaiter() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.turns[b.waiter] == nil {
		return ""
	}
	return b.waiter
}

// A Lock call records whether it had to queue (lockValue.queuedLast) as it
// returns, when an Unlock may already have passed the value's gate to the
// next Lock call on the value, which reads it: -race checks they do not
// race. A WatchWaiter stop function that takes a while widens the window.
func TestQueuedLastNoRace(t *testing.T) {
	b := &queueStub{Backend: memory.New(), stopGate: make(chan struct{})}
	holder, err := b.Backend.Acquire(context.Background(), ctxlock.AcquireRequest{
		Key: "k", Owner: "elsewhere", TTL: time.Hour, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	m := ctxlock.NewManager(b)
	defer m.Close(context.Background())
	l := m.NewLock("k")
	errs := make(chan error, 2)
	go func() { _, err := l.Lock(context.Background()); errs <- err }()
	for b.queuedWaiter() == "" {
		runtime.Gosched()
	}
	go func() { _, err := l.Lock(context.Background()); errs <- err }() // waits on the value's gate
	b.grant(t, "k", holder, time.Minute)
	for l.Token() == 0 { // the first call's hold exists; its cleanup is still running
		runtime.Gosched()
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	for l.Token() == 0 { // the second call holds the key
		runtime.Gosched()
	}
	close(b.stopGate)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	l.Unlock()
}

// A queued waiter retries every MaxRetryDelay to keep its place, however
// long its lock's retry delay: a backend drops a waiter silent for longer
// than its keep (goredis: 3s), and a 5s retry delay let the backoff grow
// past it.
func TestQueuedWaiterKeepsItsPlaceWithLongRetryDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &queueStub{Backend: memory.New()}
		if _, err := b.Backend.Acquire(context.Background(), ctxlock.AcquireRequest{
			Key: "k", Owner: "elsewhere", TTL: time.Hour, Timeout: time.Second}); err != nil {
			t.Fatal(err)
		}
		m := ctxlock.NewManager(b)
		defer m.Close(context.Background())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := m.NewLock("k", ctxlock.WithRetryDelay(5*time.Second)).Lock(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Lock of a key held for an hour = %v, want DeadlineExceeded", err)
		}
		if n := b.tries.Load(); n < 10 {
			t.Fatalf("%d attempts in 10s while queued; want one per MaxRetryDelay (1s) at least", n)
		}
	})
}

// grantingStub is a queueStub whose Acquire, like goredis's, returns the
// lease a release granted to the caller's waiter (renewed for the caller's
// TTL), and which records every lease its Release and Relock are asked to
// release.
type grantingStub struct {
	*queueStub
	released     []string // owners
	failAcquires atomic.Bool
}

func (b *grantingStub) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	if b.failAcquires.Load() {
		return ctxlock.Lease{}, ctxlock.Unavailable(errors.New("stub: acquire failed"))
	}
	if owner, _, token, _, ok := b.Holder(req.Key); ok && req.Waiter != "" && owner == ctxlock.GrantOwner(req.Waiter, token) {
		lease := ctxlock.Lease{Key: req.Key, Owner: owner, Token: token}
		if errs := b.Backend.Extend(ctx, []ctxlock.Lease{lease}, req.TTL); errs[0] != nil {
			return ctxlock.Lease{}, errs[0]
		}
		return lease, nil
	}
	return b.queueStub.Acquire(ctx, req)
}

func (b *grantingStub) Release(ctx context.Context, ls []ctxlock.Lease) []error {
	b.mu.Lock()
	for _, l := range ls {
		b.released = append(b.released, l.Owner)
	}
	b.mu.Unlock()
	return b.queueStub.Release(ctx, ls)
}

func (b *grantingStub) ReleaseContended(ctx context.Context, ls []ctxlock.Lease) ([]error, []bool) {
	return b.Release(ctx, ls), nil
}

func (b *grantingStub) Relock(ctx context.Context, old ctxlock.Lease, req ctxlock.AcquireRequest) (ctxlock.Lease, bool, bool, error) {
	if errs := b.Release(ctx, []ctxlock.Lease{old}); errs[0] != nil {
		return ctxlock.Lease{}, false, false, errs[0]
	}
	lease, err := b.Acquire(ctx, req)
	return lease, false, false, err
}

// A grant received after its validity (counted from the waiter's last
// refused attempt) has passed is not released: the Lock call's next
// attempt finds the key still granted to its waiter and holds it, renewed.
// The Manager used to queue a release of the grant, whose owner (the
// waiter's) is the one that attempt then adopted: when that release was
// sent, failed as timed out, and was retried, it landed after the adoption
// and deleted the new hold's lease, and the key went to the next waiter
// while this one held it (seen in TestChaos).
func TestLateGrantIsNotReleasedButAdopted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const grantTTL = 50 * time.Millisecond
		b := &grantingStub{queueStub: &queueStub{Backend: memory.New()}}
		holder := leaseElsewhere(t, b.Backend, "k")
		m := ctxlock.NewManager(b)
		defer m.Close(context.Background())
		l := m.NewLock("k", ctxlock.WithTTL(10*time.Second))
		// The release grants the key for 50ms; the notice comes 100ms
		// after the waiter's refusal, past the grant's validity (but the
		// lease is still there, on the backend's clock, when the waiter asks).
		var w string
		var tok uint64
		expired := lockOnGrant(t, l, func() {
			var ch chan<- ctxlock.Handoff
			w, tok, ch = b.grantQuietly(t, "k", holder, time.Second)
			time.Sleep(100 * time.Millisecond)
			ch <- ctxlock.Handoff{Token: tok, TTL: grantTTL}
		})
		if got, want := l.Token(), tok; got != want {
			t.Errorf("Lock holds token %d; want the grant's, %d", got, want)
		}
		b.mu.Lock()
		released := slices.Clone(b.released)
		b.mu.Unlock()
		if slices.Contains(released, ctxlock.GrantOwner(w, tok)) {
			t.Errorf("the late grant was released (releases: %q); want it adopted by the next attempt", released)
		}
		select {
		case <-expired:
			t.Fatalf("the adopted grant ended at once: %v", l.Err())
		case <-time.After(2 * time.Second):
		}
		l.Unlock()
	})
}

// A grant the call did not adopt (its notice came late) is released when
// the call then fails: by then nothing can adopt it, and the release is
// retried like any other, not left to one Leave (which a stub, like a
// flaky network, may not honour).
func TestUnadoptedGrantReleasedWhenCallFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &grantingStub{queueStub: &queueStub{Backend: memory.New()}}
		holder := leaseElsewhere(t, b.Backend, "k")
		m := ctxlock.NewManager(b)
		defer m.Close(context.Background())
		l := m.NewLock("k", ctxlock.WithTTL(10*time.Second))
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		errc := make(chan error, 1)
		go func() { _, err := l.Lock(ctx); errc <- err }()
		synctest.Wait() // refused, queued, listening for its turn

		w, tok, ch := b.grantQuietly(t, "k", holder, time.Second)
		b.failAcquires.Store(true) // the call's next attempts fail
		time.Sleep(100 * time.Millisecond)
		ch <- ctxlock.Handoff{Token: tok, TTL: 50 * time.Millisecond} // late: not adopted
		if err := <-errc; !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Lock: %v; want DeadlineExceeded", err)
		}
		synctest.Wait()
		b.mu.Lock()
		released := slices.Clone(b.released)
		b.mu.Unlock()
		if !slices.Contains(released, ctxlock.GrantOwner(w, tok)) {
			t.Errorf("the unadopted grant was not released when the call failed (releases: %q)", released)
		}
		if owner, _, _, _, ok := b.Holder("k"); ok {
			t.Errorf("the key is still held by %q after the call failed; want the grant released", owner)
		}
	})
}

// failingRenewal is a grantingStub whose Extend fails, transiently.
type failingRenewal struct {
	*grantingStub
	extends atomic.Int64
}

func (b *failingRenewal) Extend(ctx context.Context, ls []ctxlock.Lease, ttl time.Duration) []error {
	b.extends.Add(1)
	errs := make([]error, len(ls))
	for i := range errs {
		errs[i] = ctxlock.Unavailable(errors.New("stub: extend failed"))
	}
	return errs
}

// A short grant to a Lock without refreshes is renewed to the lock's TTL
// before it is held; when that renewal fails the grant is neither held as it
// is (it would lapse long before the lock's TTL) nor released: the call's
// next attempt finds it still granted to its waiter and holds it, renewed.
func TestShortGrantRenewalFailureRetriedByNextAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &failingRenewal{grantingStub: &grantingStub{queueStub: &queueStub{Backend: memory.New()}}}
		holder := leaseElsewhere(t, b.Backend, "k")
		m := ctxlock.NewManager(b)
		defer closeManager(t, m)
		const ttl = 10 * time.Second
		l := m.NewLock("k", ctxlock.WithTTL(ttl), ctxlock.WithoutRefresh())
		expired := lockOnGrant(t, l, func() { b.grant(t, "k", holder, time.Second) })
		if n := b.extends.Load(); n != 1 {
			t.Errorf("%d renewals (Extend) of the short grant; want 1", n)
		}
		if got, want := l.Token(), holder.Token+1; got != want {
			t.Errorf("Lock holds token %d; want the grant's, %d", got, want)
		}
		b.mu.Lock()
		released := slices.Clone(b.released)
		b.mu.Unlock()
		if len(released) != 0 {
			t.Errorf("releases %q; want the grant kept and adopted", released)
		}
		if _, _, _, rem, ok := b.Holder("k"); !ok || rem < ttl-time.Second {
			t.Errorf("lease held %v, remaining %v; want renewed to the lock's TTL %v", ok, rem, ttl)
		}
		select {
		case <-expired:
			t.Fatalf("hold ended with its 1s grant: %v", l.Err())
		case <-time.After(5 * time.Second):
		}
		l.Unlock()
	})
}
