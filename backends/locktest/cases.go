package locktest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ctxlock/ctxlock"
)

var cases = []testCase{
	{"LockUnlockRelock", testLockUnlockRelock},
	{"ReuseFreshChannels", testReuseFreshChannels},
	{"TryLockHeldSameManager", testTryLockHeldSameManager},
	{"TryLockHeldOtherManager", testTryLockHeldOtherManager},
	{"DifferentKeysDoNotConflict", testDifferentKeys},
	{"LockCancelled", testLockCancelled},
	{"LockDeadlineExceeded", testLockDeadline},
	{"OneValueTenGoroutinesSerialize", testOneValueSerializes},
	{"AtomicityA_ManyValuesThreeManagersNoOverlap", testManyValuesThreeManagers},
	{"LocalWaitersFIFO", testLocalFIFO},
	{"ReleaserYieldsToOtherOwners", testReleaserYields},
	{"LivenessA_CrashedHolderLapses", testCrashedHolderLapses},
	{"LeaseWithoutRefreshLapses", testLeaseWithoutRefreshLapses},
	{"LateUnlockKeepsNewHold", testLateUnlockKeepsNewHold},
	{"RefreshKeepsHold", testRefreshKeepsHold},
	{"ExpiryOnUnlock", testExpiryOnUnlock},
	{"ExpiryOnLoss", testExpiryOnLoss},
	{"LivenessB_ExpiryWhenUnavailable", testExpiryWhenUnavailable},
	{"LivenessB_WaiterThroughOutage", testWaiterThroughOutage},
	{"AtomicityB_UnlockDuringOutage", testUnlockDuringOutage},
	{"LockBacksOffDuringOutage", testLockBacksOffDuringOutage},
	{"ExpiryOnClose", testExpiryOnClose},
	{"CloseWakesWaiters", testCloseWakesWaiters},
	{"UnlockWithoutHold", testUnlockWithoutHold},
	{"BadInput", testBadInput},
	{"DoRunsAndUnlocks", testDo},
	{"DoCancelsOnLoss", testDoLoss},
	{"Health", testHealth},
	{"BackendBatchResultsOnePerLease", testBatchResults},
	{"BackendExtendBadTTL", testExtendBadTTL},
}

func testLockUnlockRelock(e *env) {
	m := e.manager()
	l := m.NewLock(e.key("k"), e.opts()...)
	if l.Token() != 0 || l.Err() != nil {
		e.t.Fatalf("fresh lock: Token %d, Err %v; want 0, nil", l.Token(), l.Err())
	}
	exp := e.mustLock(l)
	t1 := l.Token()
	if t1 == 0 || l.Err() != nil || isClosed(exp) {
		e.t.Fatalf("held: Token %d, Err %v, closed %v; want >0, nil, false", t1, l.Err(), isClosed(exp))
	}
	e.mustUnlock(l)
	if !isClosed(exp) {
		e.t.Fatal("expiry channel still open after Unlock returned")
	}
	if !errors.Is(l.Err(), ctxlock.ErrUnlocked) || l.Token() != 0 {
		e.t.Fatalf("after Unlock: Err %v, Token %d; want ErrUnlocked, 0", l.Err(), l.Token())
	}
	exp2 := e.mustLock(l)
	if exp2 == exp || isClosed(exp2) {
		e.t.Fatal("relock did not return a fresh, open expiry channel")
	}
	if t2 := l.Token(); t2 <= t1 {
		e.t.Fatalf("relock token %d does not exceed %d", t2, t1)
	}
	if l.Err() != nil {
		e.t.Fatalf("relocked: Err %v, want nil", l.Err())
	}
	e.mustUnlock(l)
}

func testReuseFreshChannels(e *env) {
	m := e.manager()
	l := m.NewLock(e.key("k"), e.opts()...)
	var prev []<-chan struct{}
	var last uint64
	for i := 0; i < 50; i++ {
		exp := e.mustLock(l)
		for _, p := range prev {
			if p == exp {
				e.t.Fatalf("hold %d reused an expiry channel", i)
			}
		}
		if tok := l.Token(); tok <= last {
			e.t.Fatalf("hold %d: token %d does not exceed %d", i, tok, last)
		} else {
			last = tok
		}
		if i%2 == 0 {
			prev = append(prev, exp) // odd holds' channels are discarded unread
		}
		e.mustUnlock(l)
	}
	for i, p := range prev {
		if !isClosed(p) {
			e.t.Fatalf("channel of hold %d not closed", 2*i)
		}
	}
}

func testTryLockHeldSameManager(e *env) {
	m := e.manager()
	l1 := m.NewLock(e.key("k"), e.opts()...)
	l2 := m.NewLock(e.key("k"), e.opts()...)
	e.mustLock(l1)
	start := time.Now()
	for _, l := range []ctxlock.Lock{l2, l1} {
		ok, exp, err := l.TryLock(e.ctx())
		if ok || exp != nil || err != nil {
			e.t.Fatalf("TryLock on a held key: (%v, %v, %v); want (false, nil, nil)", ok, exp, err)
		}
	}
	if e.cfg.fake && time.Since(start) != 0 {
		e.t.Fatalf("TryLock on a key held in the same Manager took %v of fake time; want 0", time.Since(start))
	}
	if l2.Token() != 0 || l2.Err() != nil {
		e.t.Fatalf("failed TryLock changed the value: Token %d, Err %v", l2.Token(), l2.Err())
	}
	e.mustUnlock(l1)
	ok, exp, err := l2.TryLock(e.ctx())
	if !ok || exp == nil || err != nil {
		e.t.Fatalf("TryLock after Unlock in the same Manager: (%v, %v, %v); want (true, chan, nil)", ok, exp, err)
	}
	e.mustUnlock(l2)
}

func testTryLockHeldOtherManager(e *env) {
	l1 := e.manager().NewLock(e.key("k"), e.opts()...)
	l2 := e.manager().NewLock(e.key("k"), e.opts()...)
	e.mustLock(l1)
	start := time.Now()
	ok, exp, err := l2.TryLock(e.ctx())
	if ok || exp != nil || err != nil {
		e.t.Fatalf("TryLock held by another Manager: (%v, %v, %v); want (false, nil, nil)", ok, exp, err)
	}
	if e.cfg.fake && time.Since(start) != 0 {
		e.t.Fatalf("TryLock took %v of fake time; want one attempt, no waiting", time.Since(start))
	}
	e.mustUnlock(l1)
	if e.cfg.fake {
		e.settle() // the release reaches the backend
		ok, _, err := l2.TryLock(e.ctx())
		if !ok || err != nil {
			e.t.Fatalf("TryLock after the holder's release: (%v, %v); want (true, nil)", ok, err)
		}
	} else {
		e.mustLock(l2)
	}
	e.mustUnlock(l2)
}

func testDifferentKeys(e *env) {
	m1, m2 := e.manager(), e.manager()
	ls := []ctxlock.Lock{
		m1.NewLock(e.key("a"), e.opts()...), m1.NewLock(e.key("b"), e.opts()...),
		m2.NewLock(e.key("c"), e.opts()...), m2.NewLock(e.key("a/b"), e.opts()...),
	}
	for _, l := range ls {
		ok, _, err := l.TryLock(e.ctx())
		if !ok || err != nil {
			e.t.Fatalf("TryLock(%q) while other keys are held: (%v, %v)", l.Key(), ok, err)
		}
	}
	for _, l := range ls {
		e.mustUnlock(l)
	}
}

func testLockCancelled(e *env) {
	m := e.manager()
	e.mustLock(m.NewLock(e.key("k"), e.opts()...))
	waiter := e.manager().NewLock(e.key("k"), e.opts()...)
	ctx, cancel := context.WithCancelCause(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := waiter.Lock(ctx)
		errc <- err
	}()
	e.settle()
	cause := errors.New("caller gave up")
	cancel(cause)
	err := <-errc
	if !errors.Is(err, context.Canceled) || !errors.Is(err, cause) {
		e.t.Fatalf("cancelled Lock returned %v; want it to match context.Canceled and the cause", err)
	}
	if waiter.Token() != 0 || waiter.Err() != nil {
		e.t.Fatalf("cancelled Lock left state: Token %d, Err %v", waiter.Token(), waiter.Err())
	}
	// An already-cancelled context fails before any attempt.
	if _, err := waiter.Lock(ctx); !errors.Is(err, context.Canceled) {
		e.t.Fatalf("Lock with a cancelled context: %v", err)
	}
}

func testLockDeadline(e *env) {
	e.mustLock(e.manager().NewLock(e.key("k"), e.opts()...))
	waiter := e.manager().NewLock(e.key("k"), e.opts()...)
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.ttl/4)
	defer cancel()
	start := time.Now()
	_, err := waiter.Lock(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		e.t.Fatalf("Lock past its deadline returned %v; want context.DeadlineExceeded", err)
	}
	if el := time.Since(start); e.cfg.fake && el != e.cfg.ttl/4 {
		e.t.Fatalf("Lock returned after %v; want exactly the deadline %v", el, e.cfg.ttl/4)
	}
	// TryLock also reports false, not an error, when ctx is fine and the key held.
	ok, _, err := waiter.TryLock(e.ctx())
	if ok || err != nil {
		e.t.Fatalf("TryLock: (%v, %v)", ok, err)
	}
}

// work stands for the critical section: time passes while the lock is held.
func (e *env) work() { time.Sleep(e.cfg.ttl / 100) }

func testOneValueSerializes(e *env) {
	l := e.manager().NewLock(e.key("k"), e.opts()...)
	var c Checker
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			exp, err := l.Lock(e.ctx())
			if err != nil {
				e.t.Errorf("goroutine %d: Lock: %v", i, err)
				return
			}
			h := Hold{Key: l.Key(), Owner: fmt.Sprint("goroutine ", i), Token: l.Token(), Start: time.Now()}
			e.work()
			if isClosed(exp) {
				e.t.Errorf("goroutine %d: hold ended early: %v", i, l.Err())
			}
			h.End = time.Now()
			c.Record(h)
			if err := l.Unlock(); err != nil {
				e.t.Errorf("goroutine %d: Unlock: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if n := c.Check(e.t); n != 10 {
		e.t.Fatalf("%d holds recorded, want 10", n)
	}
}

func testManyValuesThreeManagers(e *env) {
	const managers, values, rounds = 3, 4, 5
	var c Checker
	var wg sync.WaitGroup
	for mi := 0; mi < managers; mi++ {
		m := e.manager()
		for vi := 0; vi < values; vi++ {
			l := m.NewLock(e.key("k"), e.opts()...)
			wg.Add(1)
			go func() {
				defer wg.Done()
				who := fmt.Sprintf("manager %d value %d", mi, vi)
				for r := 0; r < rounds; r++ {
					exp, err := l.Lock(e.ctx())
					if err != nil {
						e.t.Errorf("%s: Lock: %v", who, err)
						return
					}
					h := Hold{Key: l.Key(), Owner: who, Token: l.Token(), Start: time.Now()}
					e.work()
					if isClosed(exp) {
						e.t.Errorf("%s: hold ended early: %v", who, l.Err())
					}
					h.End = time.Now()
					c.Record(h)
					if err := l.Unlock(); err != nil {
						e.t.Errorf("%s: Unlock: %v", who, err)
					}
				}
			}()
		}
	}
	wg.Wait()
	if n := c.Check(e.t); n != managers*values*rounds {
		e.t.Fatalf("%d holds recorded, want %d", n, managers*values*rounds)
	}
}

func testLocalFIFO(e *env) {
	if !e.cfg.fake {
		e.t.Skip("queue order is only observable deterministically with fake time")
	}
	m := e.manager()
	holder := m.NewLock(e.key("k"), e.opts()...)
	e.mustLock(holder)
	order := make(chan int, 5)
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		l := m.NewLock(e.key("k"), e.opts()...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.mustLock(l)
			order <- i
			e.mustUnlock(l)
		}()
		e.settle() // waiter i is queued before waiter i+1 starts
	}
	e.mustUnlock(holder)
	wg.Wait()
	close(order)
	want := 0
	for got := range order {
		if got != want {
			e.t.Fatalf("waiter %d acquired in turn %d; want FIFO order", got, want)
		}
		want++
	}
}

// A holder that unlocks and at once locks again does not simply re-take
// the key when an owner in another Manager is waiting for it.
func testReleaserYields(e *env) {
	if _, ok := e.b.(ctxlock.ContentionReporter); !ok {
		e.t.Skipf("backend %T does not report contention (no ReleaseContended method)", e.b)
	}
	// A yield lasts a tenth of the retry delay: TTL/2 here, long enough for
	// the waiter's goroutine to be scheduled on a loaded machine in real time.
	a := e.manager().NewLock(e.key("k"), e.opts(ctxlock.WithRetryDelay(5*e.cfg.ttl))...)
	b := e.manager().NewLock(e.key("k"), e.opts()...)
	e.mustLock(a)
	if ok, _, err := b.TryLock(e.ctx()); ok || err != nil {
		e.t.Fatalf("TryLock of a held key: (%v, %v)", ok, err)
	}
	order := make(chan string, 2)
	errc := make(chan error, 1)
	go func() {
		if _, err := b.Lock(e.ctx()); err != nil {
			errc <- err
			return
		}
		order <- "waiter in the other Manager"
		errc <- b.Unlock()
	}()
	e.settle()
	e.mustUnlock(a)
	e.mustLock(a)
	order <- "releaser"
	if got := <-order; got != "waiter in the other Manager" {
		e.t.Fatalf("after Unlock, the %s got the key first; want the waiter in the other Manager", got)
	}
	if err := <-errc; err != nil {
		e.t.Fatal(err)
	}
	e.mustUnlock(a)
}

// crash acquires key directly on the backend for an owner that never
// refreshes or releases: a holder process that died.
func (e *env) crash(key string) time.Time {
	e.t.Helper()
	start := time.Now()
	_, err := e.b.Acquire(e.ctx(), ctxlock.AcquireRequest{
		Key: key, Owner: "crashed-process", TTL: e.cfg.ttl, Timeout: e.cfg.ttl,
	})
	if err != nil {
		e.t.Fatalf("Backend.Acquire for the crashed holder: %v", err)
	}
	return start
}

func testCrashedHolderLapses(e *env) {
	key := e.key("k")
	start := e.crash(key)
	l := e.manager().NewLock(key, e.opts()...)
	if ok, _, err := l.TryLock(e.ctx()); ok || err != nil {
		e.t.Fatalf("TryLock while the dead holder's lease runs: (%v, %v)", ok, err)
	}
	// The waiter can be woken at the instant of the lapse only if the backend
	// says when that is: a HeldError with the holder's Remaining TTL, or a
	// Watch notification of the lapse. Both are optional; without them the
	// Manager polls, and its backoff is capped at MaxRetryDelay.
	exact := false
	if e.cfg.fake {
		exact = e.notifies()
		_, err := e.b.Acquire(e.ctx(), ctxlock.AcquireRequest{Key: key, Owner: "locktest-remaining-probe", TTL: e.cfg.ttl, Timeout: e.cfg.ttl})
		if !errors.Is(err, ctxlock.ErrHeld) {
			e.t.Fatalf("Backend.Acquire while the dead holder's lease runs: %v; want ErrHeld", err)
		}
		var he *ctxlock.HeldError
		if errors.As(err, &he) && he.Remaining > 0 {
			exact = true
		}
	}
	e.mustLock(l)
	if el := time.Since(start); el < e.cfg.ttl {
		e.t.Fatalf("acquired %v after the dead holder, before its TTL %v lapsed", el, e.cfg.ttl)
	} else if e.cfg.fake && exact && el != e.cfg.ttl {
		e.t.Fatalf("acquired %v after the dead holder; want exactly its TTL %v (woken by the lapse: the backend reports HeldError.Remaining or notifies through Watch)", el, e.cfg.ttl)
	} else if e.cfg.fake && el > e.cfg.ttl+ctxlock.MaxRetryDelay {
		e.t.Fatalf("acquired %v after the dead holder; want within MaxRetryDelay of its TTL %v (polling)", el, e.cfg.ttl)
	}
	e.mustUnlock(l)
}

func testLeaseWithoutRefreshLapses(e *env) {
	l := e.manager().NewLock(e.key("k"), e.opts(ctxlock.WithoutRefresh())...)
	start := time.Now()
	exp := e.mustLock(l)
	<-exp
	el := time.Since(start)
	if !errors.Is(l.Err(), ctxlock.ErrExpired) {
		e.t.Fatalf("Err after the lease ran out: %v; want ErrExpired", l.Err())
	}
	// In real time el also holds this goroutine's wake-up after the close,
	// which a loaded machine delays by milliseconds: allow TTL/10 for it.
	// The exact instant (the validity window) is checked with fake time.
	limit := e.cfg.ttl
	if !e.cfg.fake {
		limit += e.cfg.ttl / 10
	}
	if el >= limit {
		e.t.Fatalf("expiry channel closed %v after Lock, not before the TTL %v", el, e.cfg.ttl)
	}
	if want := e.cfg.ttl - e.drift(); e.cfg.fake && el != want {
		e.t.Fatalf("expiry channel closed after %v; want exactly the validity window %v", el, want)
	}
	l2 := e.manager().NewLock(e.key("k"), e.opts()...)
	e.mustLock(l2)
	e.mustUnlock(l2)
}

func testLateUnlockKeepsNewHold(e *env) {
	old := e.manager().NewLock(e.key("k"), e.opts(ctxlock.WithoutRefresh())...)
	exp := e.mustLock(old)
	<-exp
	next := e.manager().NewLock(e.key("k"), e.opts()...)
	nexp := e.mustLock(next)
	if err := old.Unlock(); !errors.Is(err, ctxlock.ErrNotHeld) {
		e.t.Fatalf("late Unlock of an expired hold: %v; want ErrNotHeld", err)
	}
	e.settle()
	third := e.manager().NewLock(e.key("k"), e.opts()...)
	if ok, _, err := third.TryLock(e.ctx()); ok || err != nil {
		e.t.Fatalf("after the old holder's late Unlock, TryLock by a third owner: (%v, %v); the new hold must stand", ok, err)
	}
	if isClosed(nexp) || next.Err() != nil {
		e.t.Fatalf("new hold ended: %v", next.Err())
	}
	e.mustUnlock(next)
}

func testRefreshKeepsHold(e *env) {
	l := e.manager().NewLock(e.key("k"), e.opts()...)
	exp := e.mustLock(l)
	tok := l.Token()
	other := e.manager().NewLock(e.key("k"), e.opts()...)
	deadline := time.Now().Add(3 * e.cfg.ttl)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(e.ctx(), e.cfg.ttl/2)
		_, err := other.Lock(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			e.t.Fatalf("another owner's Lock during a refreshed hold: %v; want DeadlineExceeded", err)
		}
	}
	if isClosed(exp) || l.Err() != nil || l.Token() != tok {
		e.t.Fatalf("hold after 3 TTLs: closed %v, Err %v, Token %d (was %d)", isClosed(exp), l.Err(), l.Token(), tok)
	}
	e.mustUnlock(l)
}

func testExpiryOnUnlock(e *env) {
	l := e.manager().NewLock(e.key("k"), e.opts()...)
	exp := e.mustLock(l)
	other := e.manager().NewLock(e.key("k"), e.opts()...)
	got := make(chan error, 1)
	go func() {
		_, err := other.Lock(e.ctx())
		got <- err
	}()
	e.settle()
	start := time.Now()
	e.mustUnlock(l)
	if !isClosed(exp) || !errors.Is(l.Err(), ctxlock.ErrUnlocked) {
		e.t.Fatalf("after Unlock: closed %v, Err %v", isClosed(exp), l.Err())
	}
	if err := <-got; err != nil {
		e.t.Fatalf("waiter after Unlock: %v", err)
	}
	if el := time.Since(start); e.cfg.fake && e.notifies() && el != 0 {
		e.t.Fatalf("waiter in another Manager acquired %v after Unlock; want at once (release notification through Backend.Watch)", el)
	} else if e.cfg.fake && el > ctxlock.MaxRetryDelay {
		// A backend without notifications (Watch returns nil) is polled.
		e.t.Fatalf("waiter in another Manager acquired %v after Unlock; want within MaxRetryDelay (polling)", el)
	}
	e.mustUnlock(other)
}

func testExpiryOnLoss(e *env) {
	ev := e.evicter()
	l := e.manager().NewLock(e.key("k"), e.opts()...)
	exp := e.mustLock(l)
	start := time.Now()
	ev.Evict(e.key("k"))
	<-exp
	if !errors.Is(l.Err(), ctxlock.ErrLost) {
		e.t.Fatalf("Err after the key was lost: %v; want ErrLost", l.Err())
	}
	o := ctxlock.DefaultLockOptions()
	o.Apply(e.opts()...)
	limit := o.TTL / 3 // the next refresh finds out
	if !e.cfg.fake {
		// Plus its round trip and this goroutine's wake-up on a real clock,
		// which a loaded machine (-race, Cluster) stretches; still well
		// before the refresh after it (2·TTL/3).
		limit += o.TTL / 5
	}
	if el := time.Since(start); el > limit {
		e.t.Fatalf("loss noticed after %v; want by the next refresh (%v)", el, limit)
	}
	if l.Token() != 0 {
		e.t.Fatal("Token of a lost hold is not 0")
	}
	if err := l.Unlock(); !errors.Is(err, ctxlock.ErrNotHeld) {
		e.t.Fatalf("Unlock after loss: %v; want ErrNotHeld", err)
	}
}

func testExpiryWhenUnavailable(e *env) {
	f := e.faulty()
	l := e.manager().NewLock(e.key("k"), e.opts()...)
	start := time.Now()
	exp := e.mustLock(l)
	f.SetUnavailable(true)
	<-exp
	el := time.Since(start)
	if !errors.Is(l.Err(), ctxlock.ErrExpired) || !errors.Is(l.Err(), ctxlock.ErrUnavailable) {
		e.t.Fatalf("Err when the backend is unavailable: %v; want ErrExpired with the backend fault", l.Err())
	}
	// Liveness B: the channel closes strictly before the server-side TTL,
	// which started no earlier than the Lock call. In real time el also
	// holds this goroutine's wake-up after the close, which a loaded
	// machine delays by milliseconds: allow TTL/10 for it, as
	// testLeaseWithoutRefreshLapses does; fake time checks the instant.
	limit := e.cfg.ttl
	if !e.cfg.fake {
		limit += e.cfg.ttl / 10
	}
	if el >= limit {
		e.t.Fatalf("expiry channel closed %v after Lock; the server-side TTL %v may have passed", el, e.cfg.ttl)
	}
	if want := e.cfg.ttl - e.drift(); e.cfg.fake && el != want {
		e.t.Fatalf("expiry channel closed after %v; want exactly the validity deadline %v", el, want)
	}
	e.t.Logf("Liveness B margin: expiry %v before the server-side TTL", e.cfg.ttl-el)
	// Once the backend is back, the expired hold's queued release (or the
	// lapse of its lease) lets another owner in.
	f.SetUnavailable(false)
	other := e.manager().NewLock(e.key("k"), e.opts()...)
	e.mustLock(other)
	e.mustUnlock(other)
}

// Another Manager's Lock that waits through the outage gets the key once the
// backend is back, and never before the holder's expiry channel closed.
func testWaiterThroughOutage(e *env) {
	f := e.faulty()
	holder := e.manager().NewLock(e.key("k"), e.opts()...)
	exp := e.mustLock(holder)
	f.SetUnavailable(true)
	type result struct {
		at  time.Time
		err error
	}
	got := make(chan result, 1)
	go func() {
		_, err := e.manager().NewLock(e.key("k"), e.opts()...).Lock(e.ctx())
		got <- result{time.Now(), err}
	}()
	<-exp
	expiredAt := time.Now()
	if !errors.Is(holder.Err(), ctxlock.ErrExpired) {
		e.t.Fatalf("holder's Err during the outage: %v; want ErrExpired", holder.Err())
	}
	select {
	case r := <-got:
		e.t.Fatalf("waiter returned during the outage: %v", r.err)
	default:
	}
	f.SetUnavailable(false)
	r := <-got
	if r.err != nil {
		e.t.Fatalf("waiter after the outage: %v", r.err)
	}
	if r.at.Before(expiredAt) {
		e.t.Fatalf("waiter acquired %v before the holder's channel closed", expiredAt.Sub(r.at))
	}
}

func testUnlockDuringOutage(e *env) {
	f := e.faulty()
	l := e.manager().NewLock(e.key("k"), e.opts()...)
	e.mustLock(l)
	f.SetUnavailable(true)
	e.mustUnlock(l)
	e.settle()
	time.Sleep(e.cfg.ttl / 10) // the outage lasts a while, far shorter than the TTL
	f.SetUnavailable(false)
	start := time.Now()
	other := e.manager().NewLock(e.key("k"), e.opts()...)
	e.mustLock(other)
	if el := time.Since(start); el >= e.cfg.ttl/2 {
		e.t.Fatalf("released %v after the outage ended; want soon, not at the TTL", el)
	}
	e.mustUnlock(other)
}

// attemptLimit is a Backend that counts Acquire calls and, past limit, fails
// them for good: a Lock that spins ends with that error (with fake time, a
// spin would keep the clock from ever reaching the Lock's deadline).
type attemptLimit struct {
	ctxlock.Backend
	limit    int64
	attempts atomic.Int64
}

var errTooManyAttempts = errors.New("locktest: too many acquire attempts")

func (b *attemptLimit) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	if n := b.attempts.Add(1); n > b.limit {
		return ctxlock.Lease{}, fmt.Errorf("%w (%d)", errTooManyAttempts, n)
	}
	return b.Backend.Acquire(ctx, req)
}

// A Lock that waits through an outage of a backend that fails at once
// retries on its backoff, which starts at the retry delay and doubles
// (§3): the releases of its failed attempts, which fail too, must not wake
// it early. It ends at its deadline with the fault joined in.
func testLockBacksOffDuringOutage(e *env) {
	f := e.faulty()
	b := &attemptLimit{Backend: e.b, limit: 40} // a dozen or so are due
	l := e.managerOn(b).NewLock(e.key("k"), e.opts()...)
	f.SetUnavailable(true)
	defer f.SetUnavailable(false)
	wait := e.cfg.ttl / 2
	// start before the deadline is set: taken after, it would make a Lock
	// returned right at the deadline look early.
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, err := l.Lock(ctx)
	el := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ctxlock.ErrUnavailable) {
		e.t.Fatalf("Lock during the outage: %v; want DeadlineExceeded with the backend fault", err)
	}
	if el < wait || (e.cfg.fake && el != wait) {
		e.t.Fatalf("Lock returned after %v; want at its deadline, %v", el, wait)
	}
	if n := b.attempts.Load(); n < 3 {
		e.t.Fatalf("%d acquire attempts in %v of outage; want retries on the backoff", n, wait)
	}
	e.t.Logf("%d acquire attempts in %v of outage", b.attempts.Load(), wait)
}

func testExpiryOnClose(e *env) {
	m := e.manager()
	l := m.NewLock(e.key("k"), e.opts()...)
	exp := e.mustLock(l)
	if err := m.Close(e.ctx()); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	if !isClosed(exp) || !errors.Is(l.Err(), ctxlock.ErrClosed) {
		e.t.Fatalf("after Close: closed %v, Err %v; want closed with ErrClosed", isClosed(exp), l.Err())
	}
	// Close drained the release: the key is free at once.
	other := e.manager().NewLock(e.key("k"), e.opts()...)
	if ok, _, err := other.TryLock(e.ctx()); !ok || err != nil {
		e.t.Fatalf("TryLock after the holder's Manager closed: (%v, %v); want the release drained", ok, err)
	}
	e.mustUnlock(other)
	if _, err := l.Lock(e.ctx()); !errors.Is(err, ctxlock.ErrClosed) {
		e.t.Fatalf("Lock on a closed Manager: %v; want ErrClosed", err)
	}
	if ok, _, err := m.NewLock(e.key("x"), e.opts()...).TryLock(e.ctx()); ok || !errors.Is(err, ctxlock.ErrClosed) {
		e.t.Fatalf("TryLock on a closed Manager: (%v, %v); want ErrClosed", ok, err)
	}
	if err := m.Close(e.ctx()); err != nil {
		e.t.Fatalf("second Close: %v; want nil", err)
	}
}

func testCloseWakesWaiters(e *env) {
	e.mustLock(e.manager().NewLock(e.key("k"), e.opts()...))
	m := e.manager()
	errc := make(chan error, 2)
	for i := 0; i < 2; i++ {
		l := m.NewLock(e.key("k"), e.opts()...)
		go func() {
			_, err := l.Lock(e.ctx())
			errc <- err
		}()
	}
	e.settle()
	if err := m.Close(e.ctx()); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	for i := 0; i < 2; i++ {
		if err := <-errc; !errors.Is(err, ctxlock.ErrClosed) {
			e.t.Fatalf("waiter when its Manager closed: %v; want ErrClosed", err)
		}
	}
}

func testUnlockWithoutHold(e *env) {
	m := e.manager()
	l := m.NewLock(e.key("k"), e.opts()...)
	if err := l.Unlock(); !errors.Is(err, ctxlock.ErrNotHeld) {
		e.t.Fatalf("Unlock of a fresh lock: %v; want ErrNotHeld", err)
	}
	e.mustLock(l)
	e.mustUnlock(l)
	err := l.Unlock()
	if !errors.Is(err, ctxlock.ErrNotHeld) || !errors.Is(err, ctxlock.ErrLockActionRequested) {
		e.t.Fatalf("second Unlock: %v; want ErrNotHeld and ErrLockActionRequested", err)
	}
	// Unlock from another goroutine of a hold made here is allowed, like sync.Mutex.
	e.mustLock(l)
	done := make(chan error)
	go func() { done <- l.Unlock() }()
	if err := <-done; err != nil {
		e.t.Fatalf("Unlock from another goroutine: %v", err)
	}
}

func testBadInput(e *env) {
	m := e.manager()
	long := strings.Repeat("k", ctxlock.MaxKeyLength+1)
	for _, tc := range []struct {
		name string
		key  string
		opts []ctxlock.LockOption
		want error
	}{
		{"empty key", "", nil, ctxlock.ErrInvalidKey},
		{"oversized key", long, nil, ctxlock.ErrInvalidKey},
		{"zero TTL", e.key("k"), []ctxlock.LockOption{ctxlock.WithTTL(0)}, ctxlock.ErrInvalidOption},
		{"negative TTL", e.key("k"), []ctxlock.LockOption{ctxlock.WithTTL(-time.Second)}, ctxlock.ErrInvalidOption},
		{"TTL within the drift allowance", e.key("k"), []ctxlock.LockOption{ctxlock.WithTTL(time.Millisecond)}, ctxlock.ErrInvalidOption},
		{"refresh interval equal to TTL", e.key("k"), []ctxlock.LockOption{ctxlock.WithTTL(time.Second), ctxlock.WithRefreshInterval(time.Second)}, ctxlock.ErrInvalidOption},
		{"refresh interval over TTL", e.key("k"), []ctxlock.LockOption{ctxlock.WithTTL(time.Second), ctxlock.WithRefreshInterval(time.Hour)}, ctxlock.ErrInvalidOption},
		{"negative refresh interval", e.key("k"), []ctxlock.LockOption{ctxlock.WithRefreshInterval(-1)}, ctxlock.ErrInvalidOption},
		{"zero retry delay", e.key("k"), []ctxlock.LockOption{ctxlock.WithRetryDelay(0)}, ctxlock.ErrInvalidOption},
		{"zero acquire timeout", e.key("k"), []ctxlock.LockOption{ctxlock.WithAcquireTimeout(0)}, ctxlock.ErrInvalidOption},
		{"drift factor 0.9", e.key("k"), []ctxlock.LockOption{ctxlock.WithDriftFactor(0.9)}, ctxlock.ErrInvalidOption},
		{"negative drift factor", e.key("k"), []ctxlock.LockOption{ctxlock.WithDriftFactor(-0.1)}, ctxlock.ErrInvalidOption},
		{"oversized metadata", e.key("k"), []ctxlock.LockOption{ctxlock.WithMetadata(strings.Repeat("m", ctxlock.MaxMetadataLength+1))}, ctxlock.ErrInvalidOption},
	} {
		l := m.NewLock(tc.key, tc.opts...)
		if _, err := l.Lock(e.ctx()); !errors.Is(err, tc.want) {
			e.t.Errorf("%s: Lock: %v; want %v", tc.name, err, tc.want)
		}
		if ok, exp, err := l.TryLock(e.ctx()); ok || exp != nil || !errors.Is(err, tc.want) {
			e.t.Errorf("%s: TryLock: (%v, %v, %v); want (false, nil, %v)", tc.name, ok, exp, err, tc.want)
		}
		if err := l.Unlock(); !errors.Is(err, ctxlock.ErrNotHeld) {
			e.t.Errorf("%s: Unlock: %v; want ErrNotHeld", tc.name, err)
		}
	}
	l := m.NewLock(e.key("k"), e.opts()...)
	var nilCtx context.Context // passing a nil context is the point
	if _, err := l.Lock(nilCtx); !errors.Is(err, ctxlock.ErrNilContext) {
		e.t.Errorf("Lock(nil): %v; want ErrNilContext", err)
	}
	if _, _, err := l.TryLock(nilCtx); !errors.Is(err, ctxlock.ErrNilContext) {
		e.t.Errorf("TryLock(nil): %v; want ErrNilContext", err)
	}
	if _, err := m.Health(nilCtx); !errors.Is(err, ctxlock.ErrNilContext) {
		e.t.Errorf("Health(nil): %v; want ErrNilContext", err)
	}
	if err := m.Close(nilCtx); !errors.Is(err, ctxlock.ErrNilContext) {
		e.t.Errorf("Close(nil): %v; want ErrNilContext", err)
	}
	nilMgr := ctxlock.NewManager(nil)
	if _, err := nilMgr.NewLock(e.key("k")).Lock(e.ctx()); !errors.Is(err, ctxlock.ErrNilBackend) {
		e.t.Errorf("Lock on a Manager with a nil backend: %v; want ErrNilBackend", err)
	}
	if err := nilMgr.Close(e.ctx()); err != nil {
		e.t.Errorf("Close of a Manager with a nil backend: %v", err)
	}
	// Unicode and binary keys are ordinary keys; nothing above was lost.
	for _, k := range []string{e.key("ключ-🔒"), e.key("bin\x00\xff\n")} {
		l := m.NewLock(k, e.opts()...)
		e.mustLock(l)
		e.mustUnlock(l)
	}
	e.mustLock(l)
	e.mustUnlock(l)
}

func testDo(e *env) {
	l := e.manager().NewLock(e.key("k"), e.opts()...)
	other := e.manager().NewLock(e.key("k"), e.opts()...)
	ran := false
	err := ctxlock.Do(e.ctx(), l, func(ctx context.Context) error {
		ran = true
		if ok, _, err := other.TryLock(ctx); ok || err != nil {
			return fmt.Errorf("TryLock inside Do: (%v, %v); want held", ok, err)
		}
		return nil
	})
	if err != nil || !ran {
		e.t.Fatalf("Do: %v (ran %v)", err, ran)
	}
	if !errors.Is(l.Err(), ctxlock.ErrUnlocked) {
		e.t.Fatalf("after Do: Err %v; want ErrUnlocked", l.Err())
	}
	boom := errors.New("boom")
	if err := ctxlock.Do(e.ctx(), l, func(context.Context) error { return boom }); !errors.Is(err, boom) {
		e.t.Fatalf("Do returned %v; want fn's error", err)
	}
	if err := l.Unlock(); !errors.Is(err, ctxlock.ErrNotHeld) {
		e.t.Fatalf("Do left the lock held: %v", err)
	}
	// fn may end the hold itself: that is not a loss.
	var cause error
	err = ctxlock.Do(e.ctx(), l, func(ctx context.Context) error {
		if err := l.Unlock(); err != nil {
			return err
		}
		<-ctx.Done()
		cause = context.Cause(ctx)
		return nil
	})
	if err != nil || !errors.Is(cause, ctxlock.ErrUnlocked) || errors.Is(cause, ctxlock.ErrLost) {
		e.t.Fatalf("Do whose fn unlocked: %v, fn's context cause %v; want nil, ErrUnlocked", err, cause)
	}
	// Even when fn then takes the lock again: that hold is fn's, Do leaves it.
	err = ctxlock.Do(e.ctx(), l, func(ctx context.Context) error {
		if err := l.Unlock(); err != nil {
			return err
		}
		_, err := l.Lock(e.ctx())
		return err
	})
	if err != nil || l.Token() == 0 {
		e.t.Fatalf("Do whose fn unlocked and locked again: %v, Token %d; want nil and the new hold kept", err, l.Token())
	}
	e.mustUnlock(l)
}

func testDoLoss(e *env) {
	f := e.faulty()
	l := e.manager().NewLock(e.key("k"), e.opts()...)
	var fnCause error
	err := ctxlock.Do(e.ctx(), l, func(ctx context.Context) error {
		f.SetUnavailable(true)
		<-ctx.Done()
		fnCause = context.Cause(ctx)
		return nil
	})
	f.SetUnavailable(false)
	if !errors.Is(err, ctxlock.ErrLost) || !errors.Is(err, ctxlock.ErrExpired) {
		e.t.Fatalf("Do whose hold expired: %v; want ErrLost wrapping ErrExpired", err)
	}
	if !errors.Is(fnCause, ctxlock.ErrLost) {
		e.t.Fatalf("fn's context cause: %v; want ErrLost", fnCause)
	}
}

func testHealth(e *env) {
	m := e.manager()
	if _, err := m.Health(e.ctx()); err != nil {
		e.t.Fatalf("Health of a fresh Manager: %v", err)
	}
	if err := m.Close(e.ctx()); err != nil {
		e.t.Fatal(err)
	}
	if _, err := m.Health(e.ctx()); !errors.Is(err, ctxlock.ErrClosed) {
		e.t.Fatalf("Health after Close: %v; want ErrClosed", err)
	}
}

// The Backend's batch calls answer one result per lease, in order, also
// when every lease succeeded.
func testBatchResults(e *env) {
	ctx := e.ctx()
	var leases []ctxlock.Lease
	for _, k := range []string{"a", "b", "c"} {
		l, err := e.b.Acquire(ctx, ctxlock.AcquireRequest{Key: e.key(k), Owner: "batch-" + k, TTL: e.cfg.ttl, Timeout: e.cfg.ttl})
		if err != nil {
			e.t.Fatalf("Acquire(%q): %v", k, err)
		}
		leases = append(leases, l)
	}
	check := func(op string, errs []error, want ...error) {
		e.t.Helper()
		if len(errs) != len(want) {
			e.t.Fatalf("%s of %d leases: %d results %v; want one per lease", op, len(want), len(errs), errs)
		}
		for i, err := range errs {
			if !errors.Is(err, want[i]) {
				e.t.Fatalf("%s: result %d is %v; want %v", op, i, err, want[i])
			}
		}
	}
	check("Extend", e.b.Extend(ctx, leases, e.cfg.ttl), nil, nil, nil)
	check("Release", e.b.Release(ctx, leases[1:2]), nil)
	check("Extend", e.b.Extend(ctx, leases, e.cfg.ttl), nil, ctxlock.ErrLost, nil)
	check("Release", e.b.Release(ctx, leases), nil, nil, nil)
}

// testExtendBadTTL: an Extend with a TTL ≤ 0 is bad input
// (ctxlock.ErrInvalidOption), not a lost lease: a Manager would end a hold
// on ErrLost while its lease stayed on the store. The lease stays owned.
func testExtendBadTTL(e *env) {
	ctx := e.ctx()
	l, err := e.b.Acquire(ctx, ctxlock.AcquireRequest{Key: e.key("k"), Owner: "bad-ttl", TTL: e.cfg.ttl, Timeout: e.cfg.ttl})
	if err != nil {
		e.t.Fatalf("Acquire: %v", err)
	}
	for _, ttl := range []time.Duration{0, -time.Nanosecond, -time.Millisecond + 1, -time.Second} {
		errs := e.b.Extend(ctx, []ctxlock.Lease{l}, ttl)
		if len(errs) != 1 || !errors.Is(errs[0], ctxlock.ErrInvalidOption) || errors.Is(errs[0], ctxlock.ErrLost) {
			e.t.Fatalf("Extend with TTL %v = %v; want one ErrInvalidOption, not ErrLost", ttl, errs)
		}
	}
	if errs := e.b.Extend(ctx, []ctxlock.Lease{l}, e.cfg.ttl); len(errs) != 1 || errs[0] != nil {
		e.t.Fatalf("Extend after the bad ones = %v; want the lease still owned", errs)
	}
	if errs := e.b.Release(ctx, []ctxlock.Lease{l}); len(errs) != 1 || errs[0] != nil {
		e.t.Fatalf("Release = %v", errs)
	}
}
