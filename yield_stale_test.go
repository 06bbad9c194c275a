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

// yieldStub is a memory store with a WaiterQueue whose Relock, like
// goredis's relock.lua, hands a key that old still holds to the first
// queued waiter elsewhere ("X") and queues the caller's waiter behind it:
// (wanted, queued) = (true, true), and no fence. Switches make one
// Acquire's reply lost (it took the key) and releases fail.
type yieldStub struct {
	*memory.Backend
	mu        sync.Mutex
	waiter    string
	turns     map[string]chan ctxlock.Handoff
	loseReply atomic.Bool // the next Acquire takes the key, then reports a timeout
	failRel   atomic.Bool // Release fails (transient)
	lost      chan struct{}
	relocked  chan struct{}
}

var errTimeout = ctxlock.Unavailable(errors.New("stub: reply lost (timeout)"))

func (b *yieldStub) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	lease, err := b.Backend.Acquire(ctx, req)
	if errors.Is(err, ctxlock.ErrHeld) && req.Waiter != "" {
		b.mu.Lock()
		b.waiter = req.Waiter
		b.mu.Unlock()
	}
	if err == nil && b.loseReply.CompareAndSwap(true, false) {
		close(b.lost)
		return ctxlock.Lease{}, errTimeout
	}
	return lease, err
}

func (b *yieldStub) Release(ctx context.Context, ls []ctxlock.Lease) []error {
	errs, _ := b.ReleaseContended(ctx, ls)
	return errs
}

func (b *yieldStub) ReleaseContended(ctx context.Context, ls []ctxlock.Lease) ([]error, []bool) {
	if b.failRel.Load() {
		errs := make([]error, len(ls))
		for i := range errs {
			errs[i] = errTimeout
		}
		return errs, nil
	}
	return b.Backend.ReleaseContended(ctx, ls)
}

func (b *yieldStub) Relock(ctx context.Context, old ctxlock.Lease, req ctxlock.AcquireRequest) (ctxlock.Lease, bool, bool, error) {
	if owner, _, _, _, ok := b.Holder(old.Key); ok && owner == old.Owner {
		// Old holds the key and X is queued: hand it over, queue the caller.
		b.Backend.ReleaseContended(ctx, []ctxlock.Lease{old})
		if _, err := b.Backend.Acquire(ctx, ctxlock.AcquireRequest{Key: req.Key, Owner: "X", TTL: time.Hour, Timeout: time.Second}); err != nil {
			panic(err)
		}
		close(b.relocked)
		return ctxlock.Lease{}, true, true, nil
	}
	b.Backend.ReleaseContended(ctx, []ctxlock.Lease{old})
	lease, err := b.Acquire(ctx, req)
	return lease, false, false, err
}

func (b *yieldStub) WatchWaiter(key, waiter string) (<-chan ctxlock.Handoff, func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := make(chan ctxlock.Handoff, 1)
	b.turns[waiter] = ch
	return ch, func() {}
}

func (b *yieldStub) Leave(ctx context.Context, key, waiter string) error { return nil }

// A Handoff that arrives late (as in the chaos test's slow subscriptions)
// for a grant that lapsed meanwhile must be ignored. The Manager takes a
// Handoff's lease as valid for its TTL from refusedAt, which a relock that
// yielded (queued behind the waiters it handed the key to) moves to its own
// start, although nothing tells the call that the grant it is about to
// read is older than that yield: a relock yield carries no fence. Here the
// grant (token 2) lapsed, the call's next attempt took the key (token 3)
// but its reply was lost, the release of that attempt failed, the call's
// next attempt relocked it and yielded to X (token 4) — and the call then
// adopts the lapsed grant, while X holds the key.
// A late notice of a grant that has lapsed, arriving after a relock that
// yielded and queued the waiter (a reply without a fencing counter), is not
// taken for a fresh grant. The yield used to move the call's refusedAt, the
// instant its grants' validity is counted from, past the stale grant: the
// Lock held token 2 while the key was someone else's, token 4 (found in
// review, the sequence the chaos overlap fix made plain):
//  1. the waiter is refused and queued;
//  2. a release grants it the key for 100ms; the notice is delayed;
//  3. the grant lapses; the waiter's next Acquire takes the free key, its
//     reply lost, and the release of that attempt fails for a while;
//  4. the next attempt relocks that release; another owner has queued, so
//     the relock hands it the key and queues the waiter;
//  5. the stale notice arrives.
func TestStaleHandoffAfterRelockYieldIsNotAdopted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &yieldStub{Backend: memory.New(), turns: map[string]chan ctxlock.Handoff{},
			lost: make(chan struct{}), relocked: make(chan struct{})}
		holder, err := b.Backend.Acquire(context.Background(), ctxlock.AcquireRequest{
			Key: "k", Owner: "P", TTL: time.Hour, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		m := ctxlock.NewManager(b)
		l := m.NewLock("k", ctxlock.WithTTL(10*time.Second))
		done := lockInBackground(l)
		synctest.Wait() // refused twice, queued, listening, sleeping ~1s

		// P's release grants the key to the waiter for 100ms; the notice
		// is delayed.
		b.Backend.Release(context.Background(), []ctxlock.Lease{holder})
		b.mu.Lock()
		w, ch := b.waiter, b.turns[b.waiter]
		b.mu.Unlock()
		grant, err := b.Backend.Acquire(context.Background(), ctxlock.AcquireRequest{
			Key: "k", Owner: ctxlock.GrantOwner(w, 2), TTL: 100 * time.Millisecond, Timeout: time.Second})
		if err != nil || grant.Token != 2 {
			t.Fatalf("grant: %+v %v", grant, err)
		}
		// The grant lapses; the call's next attempt takes the free key, its
		// reply lost; the release of that attempt's lease fails for a while.
		b.loseReply.Store(true)
		b.failRel.Store(true)
		<-b.lost
		// The next attempt relocks that release and yields to X.
		<-b.relocked
		b.failRel.Store(false)
		synctest.Wait() // the call waits for its turn
		// Now the late notice of the lapsed grant arrives.
		ch <- ctxlock.Handoff{Token: 2, TTL: 100 * time.Millisecond}
		synctest.Wait()

		staleGrantNotHeld(t, b.Backend, l, m, done)
	})
}

// lostRefusalStub is a yieldStub that can lose the reply of one refusal
// (the waiter is queued on the store, the call hears a timeout) and cut the
// caller off (every Acquire and Relock fails, with no effect).
type lostRefusalStub struct {
	*yieldStub
	loseRefusal atomic.Bool
	down        atomic.Bool
	refusalLost chan string // the waiter whose refusal's reply was lost
}

func (b *lostRefusalStub) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	if b.down.Load() {
		return ctxlock.Lease{}, errTimeout
	}
	lease, err := b.yieldStub.Acquire(ctx, req)
	if errors.Is(err, ctxlock.ErrHeld) && req.Waiter != "" && b.loseRefusal.CompareAndSwap(true, false) {
		b.refusalLost <- req.Waiter
		return ctxlock.Lease{}, errTimeout
	}
	return lease, err
}

func (b *lostRefusalStub) Relock(ctx context.Context, old ctxlock.Lease, req ctxlock.AcquireRequest) (ctxlock.Lease, bool, bool, error) {
	if b.down.Load() {
		return ctxlock.Lease{}, false, false, errTimeout
	}
	return b.yieldStub.Relock(ctx, old, req)
}

// The relock-yield fix (refusedAt set by a queued yield only when zero)
// assumes a zero refusedAt means the waiter was never queued before the
// yield. A refusal whose reply was lost (a timeout) queues the waiter on
// the backend while the call records no refusal, so a grant made before the
// yield, lapsed since, is dated from the yield and adopted: two holders.
//  1. the value's last call queued, so this call listens before its first attempt;
//  2. its first attempt is refused and queued, the reply lost (a timeout);
//  3. the holder's release grants the waiter the key for 100ms; the
//     notice is delayed; the call's attempts fail meanwhile (cut off);
//  4. the grant lapses; the call's next attempt takes the free key, its
//     reply lost; the release of that attempt fails for a while;
//  5. the next attempt relocks that release, which hands the key to X and
//     queues the waiter: refusedAt was zero, so it becomes this instant;
//  6. the stale notice arrives.
//
// The same, when the call's first refusal was answered but its answer lost
// (the waiter queued on the backend, the call none the wiser): the call's
// refusedAt was still zero at the yield, which then dated its grants,
// although a grant had been made, and had lapsed, before it. Only a yield
// that is the call's first attempt dates its grants now (found in review).
func TestStaleHandoffAfterLostRefusalAndYieldIsNotAdopted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &lostRefusalStub{
			yieldStub: &yieldStub{Backend: memory.New(), turns: map[string]chan ctxlock.Handoff{},
				lost: make(chan struct{}), relocked: make(chan struct{})},
			refusalLost: make(chan string, 1),
		}
		holder, err := b.Backend.Acquire(context.Background(), ctxlock.AcquireRequest{
			Key: "k", Owner: "P", TTL: time.Hour, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		m := ctxlock.NewManager(b)
		l := m.NewLock("k", ctxlock.WithTTL(10*time.Second))

		// 1. A call that queues and gives up.
		ctx1, cancel1 := context.WithTimeout(context.Background(), 50*time.Millisecond)
		if _, err := l.Lock(ctx1); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("first Lock: %v", err)
		}
		cancel1()
		synctest.Wait()

		// 2.
		b.loseRefusal.Store(true)
		done := lockInBackground(l)
		w := <-b.refusalLost
		b.down.Store(true)

		// 3.
		b.Backend.Release(context.Background(), []ctxlock.Lease{holder})
		grant, err := b.Backend.Acquire(context.Background(), ctxlock.AcquireRequest{
			Key: "k", Owner: ctxlock.GrantOwner(w, 2), TTL: 100 * time.Millisecond, Timeout: time.Second})
		if err != nil || grant.Token != 2 {
			t.Fatalf("grant: %+v %v", grant, err)
		}
		time.Sleep(150 * time.Millisecond)

		// 4, 5.
		b.loseReply.Store(true)
		b.failRel.Store(true)
		b.down.Store(false)
		<-b.lost
		<-b.relocked
		b.failRel.Store(false)
		synctest.Wait()

		// 6.
		b.mu.Lock()
		ch := b.turns[w]
		b.mu.Unlock()
		if ch == nil {
			t.Fatal("the call does not listen for its turn")
		}
		ch <- ctxlock.Handoff{Token: 2, TTL: 100 * time.Millisecond}
		synctest.Wait()

		staleGrantNotHeld(t, b.Backend, l, m, done)
	})
}

// lockOutcome is what a Lock call made by lockInBackground returned.
type lockOutcome struct {
	err   error
	token uint64
}

// lockInBackground calls l.Lock in a goroutine of its own.
func lockInBackground(l ctxlock.Lock) <-chan lockOutcome {
	done := make(chan lockOutcome, 1)
	go func() { _, err := l.Lock(context.Background()); done <- lockOutcome{err, l.Token()} }()
	return done
}

// staleGrantNotHeld fails t if the Lock call (done) holds a stale grant
// while the store's key "k" is another owner's, then closes m.
func staleGrantNotHeld(t *testing.T, store *memory.Backend, l ctxlock.Lock, m *ctxlock.Manager, done <-chan lockOutcome) {
	t.Helper()
	select {
	case r := <-done:
		if r.err == nil {
			owner, _, tok, _, _ := store.Holder("k")
			t.Errorf("Lock returned a hold with token %d (a grant that lapsed) while the store's key is held by %q, token %d: two holders",
				r.token, owner, tok)
			l.Unlock()
		}
	default: // still waiting: the stale grant was ignored
	}
	closeManager(t, m)
}
