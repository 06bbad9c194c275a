package ctxlock_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// grantExtendGate is a queueStub whose Extend waits for gate, and which
// counts the backend calls made after the test marks the Manager closed.
type grantExtendGate struct {
	*queueStub
	gate       chan struct{}
	closed     atomic.Bool
	callsAfter atomic.Int32
}

func (b *grantExtendGate) Extend(ctx context.Context, ls []ctxlock.Lease, ttl time.Duration) []error {
	<-b.gate
	if b.closed.Load() {
		b.callsAfter.Add(1)
	}
	return b.queueStub.Extend(ctx, ls, ttl)
}

func (b *grantExtendGate) Release(ctx context.Context, ls []ctxlock.Lease) []error {
	if b.closed.Load() {
		b.callsAfter.Add(1)
	}
	return b.queueStub.Release(ctx, ls)
}

// A Lock call granted a short lease with WithoutRefresh renews it with
// Extend before adopting it: Close waits for that call too, and for the
// release of the grant, and nothing touches the backend after Close has
// returned.
func TestCloseWaitsForGrantRenewal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		qs := &queueStub{Backend: memory.New()}
		b := &grantExtendGate{queueStub: qs, gate: make(chan struct{})}
		m, locked := lockGrantedShort(t, qs, b)
		synctest.Wait() // the Lock call renews the short grant: Extend waits in the backend
		closed := make(chan error, 1)
		go func() { closed <- m.Close(context.Background()) }()
		synctest.Wait()
		returned := false
		select {
		case err := <-closed:
			returned = true
			b.closed.Store(true)
			t.Errorf("Close returned (%v) while the Lock call's Extend of its grant was in flight", err)
		default:
		}
		close(b.gate)
		if err := <-locked; !errors.Is(err, ctxlock.ErrClosed) {
			t.Errorf("Lock = %v, want ErrClosed", err)
		}
		if n := b.callsAfter.Load(); n > 0 {
			t.Errorf("%d backend calls (Extend, Release of the grant) after Close returned", n)
		}
		if !returned {
			if err := <-closed; err != nil {
				t.Fatal(err)
			}
		}
	})
}

// queueAfterClose is a memory backend with a WaiterQueue whose Acquire
// waits for gate, and whose Leave waits for leaveGate.
type queueAfterClose struct {
	*memory.Backend
	gate, leaveGate chan struct{}
	inLeave         atomic.Int32
}

func (b *queueAfterClose) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	<-b.gate
	return b.Backend.Acquire(ctx, req)
}

func (b *queueAfterClose) WatchWaiter(key, waiter string) (<-chan ctxlock.Handoff, func()) {
	return nil, func() {}
}

func (b *queueAfterClose) Leave(ctx context.Context, key, waiter string) error {
	b.inLeave.Add(1)
	defer b.inLeave.Add(-1)
	<-b.leaveGate // a Leave that takes a round trip
	return nil
}

// A Lock call whose attempt ends, refused, after Close began leaves the
// waiter queue before Close returns.
func TestCloseWaitsForLeaveAfterAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := heldElsewhere(t, "k")
		b := &queueAfterClose{Backend: store, gate: make(chan struct{}), leaveGate: make(chan struct{})}
		m := ctxlock.NewManager(b)
		locked := make(chan error, 1)
		go func() { _, err := m.NewLock("k").Lock(context.Background()); locked <- err }()
		synctest.Wait() // the attempt (with a waiter id) waits in the backend
		closed := make(chan error, 1)
		go func() { closed <- m.Close(context.Background()) }()
		synctest.Wait()
		close(b.gate) // the attempt ends, refused: the key is held elsewhere
		synctest.Wait()
		select {
		case err := <-closed:
			if n := b.inLeave.Load(); n > 0 {
				t.Errorf("Close returned (%v) while %d WaiterQueue.Leave call(s) of the attempt's Lock call were in flight", err, n)
			}
		default:
		}
		close(b.leaveGate)
		if err := <-locked; !errors.Is(err, ctxlock.ErrClosed) {
			t.Fatalf("Lock = %v, want ErrClosed", err)
		}
	})
}

// grantingAcquire is a memory backend with a WaiterQueue whose Acquire, once
// gate opens, answers a waiter with a grant: a lease owned by
// GrantOwner(waiter, token), as a release that handed the key over leaves
// it (token 1: a fresh key).
type grantingAcquire struct {
	*memory.Backend
	gate chan struct{}
}

func (b grantingAcquire) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	<-b.gate
	req.Owner = ctxlock.GrantOwner(req.Waiter, 1)
	return b.Backend.Acquire(ctx, req)
}

func (b grantingAcquire) WatchWaiter(key, waiter string) (<-chan ctxlock.Handoff, func()) {
	return nil, func() {}
}

func (b grantingAcquire) Leave(ctx context.Context, key, waiter string) error { return nil }

// A grant that an attempt in flight as Close began brings back is given
// back before Close returns, under the grant's owner (not the owner the
// attempt asked for, which the backend would not find).
func TestCloseReleasesGrantOfAttemptInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := grantingAcquire{memory.New(), make(chan struct{})}
		defer b.Close()
		m := ctxlock.NewManager(b)
		locked := make(chan error, 1)
		go func() { _, err := m.NewLock("k").Lock(context.Background()); locked <- err }()
		synctest.Wait()
		closed := make(chan error, 1)
		go func() { closed <- m.Close(context.Background()) }()
		synctest.Wait()
		close(b.gate)
		if err := <-closed; err != nil {
			t.Fatalf("Close: %v", err)
		}
		if owner, _, _, _, held := b.Holder("k"); held {
			t.Fatalf("the grant (owner %q) is still held after Close returned", owner)
		}
		if err := <-locked; !errors.Is(err, ctxlock.ErrClosed) {
			t.Fatalf("Lock = %v, want ErrClosed", err)
		}
	})
}

// hungExtendQueue is a queueStub whose Extend hangs until hang is closed
// or its ctx ends (a hung node that honours ctx).
type hungExtendQueue struct {
	*queueStub
	hang chan struct{}
}

func (b *hungExtendQueue) Extend(ctx context.Context, ls []ctxlock.Lease, ttl time.Duration) []error {
	select {
	case <-b.hang:
	case <-ctx.Done():
	}
	return b.queueStub.Extend(ctx, ls, ttl)
}

// A short grant's renewal (WithoutRefresh) on a backend that hangs is
// bounded by the Lock's AcquireTimeout: Close, which waits for the Lock
// call, returns although the Lock's own ctx has no deadline.
func TestCloseDoesNotWaitOnHungGrantRenewal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		qs := &queueStub{Backend: memory.New()}
		b := &hungExtendQueue{queueStub: qs, hang: make(chan struct{})}
		m, locked := lockGrantedShort(t, qs, b)
		synctest.Wait() // the Lock call's renewal Extend hangs in the backend

		closed := make(chan error, 1)
		start := time.Now()
		go func() { closed <- m.Close(context.Background()) }()
		time.Sleep(time.Minute) // fake time: 600 AcquireTimeouts
		select {
		case err := <-closed:
			if err != nil {
				t.Errorf("Close: %v", err)
			}
		default:
			t.Errorf("Close(context.Background()) still blocked after %v: the renewal of a short grant hangs on the Lock's deadline-less ctx", time.Since(start))
			close(b.hang)
			<-closed
		}
		if err := <-locked; !errors.Is(err, ctxlock.ErrClosed) {
			t.Errorf("Lock = %v, want ErrClosed", err)
		}
	})
}

// A Lock call that Close wakes leaves the waiter queue in line; when
// Close's ctx ends first, Close cancels that Leave too and says so, as it
// does for the Leaves running in the background.
func TestCloseContextCutsInlineLeave(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := heldElsewhere(t, "k")
		b := &gatedLeaver{Backend: store, gate: make(chan struct{})}
		m := ctxlock.NewManager(b)
		locked := make(chan error, 1)
		go func() {
			_, err := m.NewLock("k", ctxlock.WithAcquireTimeout(time.Hour)).Lock(context.Background())
			locked <- err
		}()
		synctest.Wait() // refused and queued
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		err := m.Close(ctx)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "1 waiter-queue leaves cut short") {
			t.Fatalf("Close with the woken Lock's Leave running = %v; want DeadlineExceeded naming the leave", err)
		}
		if err := <-locked; !errors.Is(err, ctxlock.ErrClosed) {
			t.Fatalf("Lock = %v, want ErrClosed", err)
		}
		if d, c := b.done.Load(), b.cut.Load(); d != 0 || c != 1 {
			t.Fatalf("Leave calls: %d done, %d cut short; want the one cut short", d, c)
		}
	})
}

// lockGrantedShort makes a Manager over b (which wraps qs), starts a Lock of
// "k" with WithoutRefresh while another owner holds it, and, once the Lock
// is queued, has the holder's release grant it a 3s lease (shorter than
// its TTL, so the Lock renews it). It returns the Manager and the Lock's
// result. Call it inside the bubble.
func lockGrantedShort(t *testing.T, qs *queueStub, b ctxlock.Backend) (*ctxlock.Manager, <-chan error) {
	t.Helper()
	holder, err := qs.Backend.Acquire(context.Background(), ctxlock.AcquireRequest{
		Key: "k", Owner: "elsewhere", TTL: time.Hour, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	m := ctxlock.NewManager(b)
	l := m.NewLock("k", ctxlock.WithTTL(time.Minute), ctxlock.WithoutRefresh())
	locked := make(chan error, 1)
	go func() { _, err := l.Lock(context.Background()); locked <- err }()
	synctest.Wait() // refused, queued, listening for its turn
	qs.grant(t, "k", holder, 3*time.Second)
	return m, locked
}

// Close gives back what an acquire in flight took as it began, like any
// release: retried until the backend confirms, even when the backend is
// slower than one acquire attempt. It used to make one attempt bounded by
// DefaultAcquireTimeout and ignore its failure: Close returned nil with the
// lease held for its TTL.
func TestCloseGivesBackSlowAttemptInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := memory.New()
		defer b.Close()
		m := ctxlock.NewManager(b)
		b.SetLatency(200 * time.Millisecond) // every backend call takes 200ms
		errc := make(chan error, 1)
		go func() {
			_, err := m.NewLock("k", ctxlock.WithAcquireTimeout(time.Second)).Lock(context.Background())
			errc <- err
		}()
		time.Sleep(50 * time.Millisecond) // the acquire is in flight
		if err := m.Close(context.Background()); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := <-errc; !errors.Is(err, ctxlock.ErrClosed) {
			t.Fatalf("Lock as Close began: %v; want ErrClosed", err)
		}
		if _, _, _, rem, ok := b.Holder("k"); ok {
			t.Errorf("Close returned nil with the lease its acquire in flight took still held (for %v)", rem)
		}
	})
}

// When Close gives up on draining (its context ends) while an acquire is
// in flight, it reports that call, and the lease the call took when it
// returns is still given back (in line: the scheduler has stopped).
func TestCloseAbandonedStillGivesBackAttemptInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := memory.New()
		defer b.Close()
		m := ctxlock.NewManager(b)
		b.SetLatency(200 * time.Millisecond)
		errc := make(chan error, 1)
		go func() {
			_, err := m.NewLock("k", ctxlock.WithAcquireTimeout(time.Second)).Lock(context.Background())
			errc <- err
		}()
		time.Sleep(50 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if err := m.Close(ctx); err == nil || !strings.Contains(err.Error(), "1 Lock calls not yet returned") {
			t.Fatalf("Close with an attempt still in flight at its deadline: %v; want it reported", err)
		}
		b.SetLatency(0) // the acquire, sent before, still takes its 200ms
		if err := <-errc; !errors.Is(err, ctxlock.ErrClosed) {
			t.Fatalf("Lock as Close began: %v; want ErrClosed", err)
		}
		if _, _, _, rem, ok := b.Holder("k"); ok {
			t.Errorf("the lease the attempt took is still held (for %v)", rem)
		}
	})
}

// slowCancelBackend's Release of key "a" takes 1s whatever its context says
// (as go-redis without ContextTimeoutEnabled, on a frozen server), and its
// Acquire of "b" 300ms.
type slowCancelBackend struct{ ctxlock.Backend }

func (b slowCancelBackend) Release(ctx context.Context, ls []ctxlock.Lease) []error {
	if len(ls) == 1 && ls[0].Key == "a" {
		time.Sleep(time.Second)
	}
	return b.Backend.Release(ctx, ls)
}

func (b slowCancelBackend) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	if req.Key == "b" {
		time.Sleep(300 * time.Millisecond)
	}
	return b.Backend.Acquire(ctx, req)
}

// A lease taken after Close stopped waiting for releases, while it waits
// for its workers to finish, is given back in line: a release queued then
// would reach no scheduler.
func TestCloseGivesBackAttemptReturningWhileWorkersFinish(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memory.New()
		defer mem.Close()
		m := ctxlock.NewManager(slowCancelBackend{mem})
		ctx := context.Background()
		if _, err := m.NewLock("a").Lock(ctx); err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := m.NewLock("b", ctxlock.WithAcquireTimeout(time.Second)).Lock(ctx)
			errc <- err
		}()
		time.Sleep(50 * time.Millisecond)
		cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		// Close gives up at 150ms and returns, a's release still running
		// (until 1.05s); b's acquire returns at 300ms, after Close.
		if err := m.Close(cctx); err == nil {
			t.Fatal("Close returned nil with a release and a Lock call outstanding at its deadline")
		}
		if err := <-errc; !errors.Is(err, ctxlock.ErrClosed) {
			t.Fatalf("Lock as Close began: %v; want ErrClosed", err)
		}
		if _, _, _, rem, ok := mem.Holder("b"); ok {
			t.Errorf("the lease taken at 300ms is still held (for %v) after Close returned", rem)
		}
		time.Sleep(time.Second) // a's slow release ends within the bubble
	})
}

// Close sends the releases of expired holds still in their grace (the drift
// allowance after the expiry) at once, as it releases live holds: it used to
// wait the grace out, which is up to half the TTL (36s with a 1h TTL, 24m
// with a drift factor of 0.4).
func TestCloseSendsReleasesInExpiryGrace(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []ctxlock.LockOption
	}{
		{"ttl 1h", []ctxlock.LockOption{ctxlock.WithTTL(time.Hour)}},
		{"ttl 1h drift 0.4", []ctxlock.LockOption{ctxlock.WithTTL(time.Hour), ctxlock.WithDriftFactor(0.4), ctxlock.WithRefreshInterval(time.Minute)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := memory.New()
				m := ctxlock.NewManager(b)
				l := m.NewLock("k", tc.opts...)
				exp, err := l.Lock(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				b.SetUnavailable(true)
				<-exp
				if !errors.Is(l.Err(), ctxlock.ErrExpired) {
					t.Fatalf("Err = %v; want ErrExpired", l.Err())
				}
				b.SetUnavailable(false)
				start := time.Now()
				if err := m.Close(context.Background()); err != nil {
					t.Fatal(err)
				}
				if d := time.Since(start); d > time.Second {
					t.Errorf("Close took %v after an expiry, with the store available", d)
				}
				if _, _, _, rem, ok := b.Holder("k"); ok {
					t.Errorf("the expired hold's lease is still held (for %v) after Close", rem)
				}
			})
		})
	}
}
