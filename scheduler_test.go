package ctxlock_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// recordingBackend records every Extend call: when, how many leases, and how
// many ran at once.
type recordingBackend struct {
	*memory.Backend
	mu          sync.Mutex
	extends     []extendCall
	inflight    int
	maxInflight int
}

type extendCall struct {
	at time.Time
	n  int
}

func newRecording() *recordingBackend { return &recordingBackend{Backend: memory.New()} }

func (r *recordingBackend) Extend(ctx context.Context, leases []ctxlock.Lease, ttl time.Duration) []error {
	r.mu.Lock()
	r.extends = append(r.extends, extendCall{time.Now(), len(leases)})
	r.inflight++
	r.maxInflight = max(r.maxInflight, r.inflight)
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inflight--
		r.mu.Unlock()
	}()
	return r.Backend.Extend(ctx, leases, ttl)
}

func (r *recordingBackend) calls() []extendCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]extendCall(nil), r.extends...)
}

func closeManager(t *testing.T, m *ctxlock.Manager) {
	t.Helper()
	if err := m.Close(context.Background()); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// lockMany acquires n locks named prefix-i, calling between after each.
func lockMany(t *testing.T, m *ctxlock.Manager, n int, prefix string, between func(), opts ...ctxlock.LockOption) []ctxlock.Lock {
	t.Helper()
	locks := make([]ctxlock.Lock, n)
	for i := range locks {
		locks[i] = m.NewLock(fmt.Sprintf("%s-%d", prefix, i), opts...)
		if _, err := locks[i].Lock(context.Background()); err != nil {
			t.Fatal(err)
		}
		if between != nil {
			between()
		}
	}
	return locks
}

// 1,000 locks taken at one instant are refreshed in ONE Extend call per
// interval, exactly at each interval.
func TestRefreshBatchesSimultaneousLocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newRecording()
		m := ctxlock.NewManager(b)
		defer closeManager(t, m)
		const ttl, interval = 30 * time.Second, 10 * time.Second
		start := time.Now()
		lockMany(t, m, 1000, "k", nil, ctxlock.WithTTL(ttl))
		time.Sleep(5*interval + time.Second)
		synctest.Wait()
		calls := b.calls()
		if len(calls) != 5 {
			t.Fatalf("%d Extend calls in 5 intervals, want 5: %v", len(calls), calls)
		}
		for i, c := range calls {
			if want := start.Add(time.Duration(i+1) * interval); !c.at.Equal(want) || c.n != 1000 {
				t.Errorf("call %d: %d leases at +%v; want 1000 at +%v", i, c.n, c.at.Sub(start), want.Sub(start))
			}
		}
	})
}

// 1,000 locks taken evenly across one interval are refreshed in a handful of
// Extend calls per interval (leases due within a quarter interval share a
// call), and every lease is refreshed every interval.
func TestRefreshBatchesSpreadLocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newRecording()
		m := ctxlock.NewManager(b)
		defer closeManager(t, m)
		const ttl, interval = 30 * time.Second, 10 * time.Second
		lockMany(t, m, 1000, "k", func() { time.Sleep(interval / 1000) }, ctxlock.WithTTL(ttl))
		from := time.Now().Add(2 * interval) // past the first, unbatched round
		time.Sleep(5 * interval)
		synctest.Wait()
		var calls, leases int
		for _, c := range b.calls() {
			if !c.at.Before(from) && c.at.Before(from.Add(2*interval)) {
				calls++
				leases += c.n
			}
		}
		if leases != 2000 {
			t.Errorf("%d leases refreshed in 2 intervals, want 2000 (each of 1000 once per interval)", leases)
		}
		// Batches are never more than a quarter interval apart in due time, and
		// rounds merge them: 1,000 leases settle into 3 calls per interval.
		if calls != 6 {
			for _, c := range b.calls() {
				t.Logf("Extend of %d leases at %v", c.n, c.at.Sub(from))
			}
			t.Errorf("%d Extend calls in 2 intervals, want 6 (3 batches per interval)", calls)
		}
	})
}

// A hung backend never delays an expiry: backend I/O runs on workers, and the
// expiry channel closes exactly at the validity deadline.
func TestHungBackendDoesNotDelayExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := memory.New()
		m := ctxlock.NewManager(b)
		const ttl = 9 * time.Second
		start := time.Now()
		l := m.NewLock("k", ctxlock.WithTTL(ttl))
		exp, err := l.Lock(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		other := m.NewLock("other", ctxlock.WithTTL(ttl))
		if _, err := other.Lock(context.Background()); err != nil {
			t.Fatal(err)
		}
		b.SetLatency(time.Hour)
		<-exp
		drift := time.Duration(float64(ttl)*ctxlock.DefaultDriftFactor) + 2*time.Millisecond
		if el := time.Since(start); el != ttl-drift {
			t.Fatalf("expired after %v; want exactly %v", el, ttl-drift)
		}
		if !errors.Is(l.Err(), ctxlock.ErrExpired) {
			t.Fatalf("Err: %v", l.Err())
		}
		// Unlock does not block on the hung backend either.
		if err := other.Unlock(); err != nil && !errors.Is(err, ctxlock.ErrNotHeld) {
			t.Fatal(err)
		}
		if time.Since(start) != ttl-drift {
			t.Fatal("Unlock waited for the backend")
		}
		b.SetLatency(0)
		closeManager(t, m)
	})
}

// The scheduler runs at most WithWorkers backend calls at once, however
// many batches are due.
func TestWorkersBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		if n, most := extendConcurrency(t, 6, ctxlock.WithWorkers(2)); most != 2 || n < 6 {
			t.Fatalf("%d Extend calls, at most %d at once; want all 6 batches run, at most 2 at once", n, most)
		}
	})
}

// extendConcurrency holds n locks of different TTLs, so that n refresh
// batches (different TTLs cannot share an Extend call) fall due together on
// a Manager made with opts, lets every Extend take a second, and returns
// how many Extend calls ran and how many at most at once. It runs in a
// synctest bubble.
func extendConcurrency(t *testing.T, n int, opts ...ctxlock.ManagerOption) (calls, most int) {
	t.Helper()
	b := newRecording()
	m := ctxlock.NewManager(b, opts...)
	defer closeManager(t, m)
	for i := range n {
		l := m.NewLock(fmt.Sprint("k", i), ctxlock.WithTTL(time.Duration(30+i)*time.Second), ctxlock.WithRefreshInterval(10*time.Second))
		if _, err := l.Lock(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	b.SetLatency(time.Second)
	time.Sleep(15 * time.Second)
	synctest.Wait()
	b.SetLatency(0)
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.extends), b.maxInflight
}

// The number of goroutines does not grow with the number of held locks.
func TestGoroutinesIndependentOfLocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := ctxlock.NewManager(memory.New())
		defer closeManager(t, m)
		lockMany(t, m, 10, "few", nil)
		synctest.Wait()
		few := managerGoroutines()
		lockMany(t, m, 10_000, "many", nil)
		synctest.Wait()
		many := managerGoroutines()
		if few != 1 || many != 1 {
			t.Fatalf("Manager goroutines: %d for 10 locks, %d for 10,010; want 1 (the scheduler) for both", few, many)
		}
	})
}

// managerGoroutines counts the goroutines running the Manager's code.
func managerGoroutines() int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/ctxlock/ctxlock.(*Manager)") {
			n++
		}
	}
	return n
}

// An Unlock during an outage stays pending (Health says so) and is
// confirmed as soon as the backend is back.
func TestReleaseRetriedUntilConfirmed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := memory.New()
		m := ctxlock.NewManager(b)
		defer closeManager(t, m)
		l := m.NewLock("k")
		if _, err := l.Lock(context.Background()); err != nil {
			t.Fatal(err)
		}
		b.SetUnavailable(true)
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		conds, _ := m.Health(context.Background())
		if !strings.Contains(strings.Join(conds, ";"), "pending releases: 1") {
			t.Fatalf("Health during the outage: %q; want pending releases: 1", conds)
		}
		b.SetUnavailable(false)
		time.Sleep(2 * ctxlock.MaxRetryDelay)
		synctest.Wait()
		if _, _, _, _, held := b.Holder("k"); held {
			t.Fatal("lease still held after the backend came back")
		}
		if conds, err := m.Health(context.Background()); err != nil || len(conds) != 0 {
			t.Fatalf("Health after recovery: %q, %v; want clean", conds, err)
		}
	})
}

// Close with a context that ends before a hung backend answers abandons the
// pending releases, says so, and still stops every goroutine.
func TestCloseAbandonsWhenBackendHangs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := memory.New()
		m := ctxlock.NewManager(b)
		l := m.NewLock("k")
		exp, err := l.Lock(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		b.SetLatency(time.Hour)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err = m.Close(ctx)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "1 releases abandoned") {
			t.Fatalf("Close: %v; want the abandoned release reported", err)
		}
		select {
		case <-exp:
		default:
			t.Fatal("hold not ended by Close")
		}
		if !errors.Is(l.Err(), ctxlock.ErrClosed) {
			t.Fatalf("Err: %v", l.Err())
		}
	})
}

// attemptCounter is a memory backend that counts acquire attempts (Acquire
// and Relock) and, past limit, fails them for good, so that a Lock that
// spins ends instead of keeping fake time from moving.
type attemptCounter struct {
	*memory.Backend
	limit    int
	attempts atomic.Int64
}

var errTooManyAttempts = errors.New("test: too many acquire attempts")

func (b *attemptCounter) count() error {
	if n := b.attempts.Add(1); n > int64(b.limit) {
		return fmt.Errorf("%w (%d)", errTooManyAttempts, n)
	}
	return nil
}

func (b *attemptCounter) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	if err := b.count(); err != nil {
		return ctxlock.Lease{}, err
	}
	return b.Backend.Acquire(ctx, req)
}

func (b *attemptCounter) Relock(ctx context.Context, old ctxlock.Lease, req ctxlock.AcquireRequest) (ctxlock.Lease, bool, bool, error) {
	if err := b.count(); err != nil {
		return ctxlock.Lease{}, false, false, err
	}
	return b.Backend.Relock(ctx, old, req)
}

// A Lock that waits through an outage of a backend that fails at once
// retries on its backoff (10ms, doubling up to MaxRetryDelay): the releases
// of its failed attempts, which fail too, neither wake it early nor get
// retried by it ahead of their own backoff. It ends at its deadline with the
// fault joined in, having made a handful of attempts, not thousands.
func TestLockBacksOffDuringOutage(t *testing.T) {
	for _, held := range []bool{false, true} {
		t.Run(fmt.Sprintf("held=%v", held), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := &attemptCounter{Backend: memory.New(), limit: 100}
				m := ctxlock.NewManager(b)
				defer closeManager(t, m)
				if held {
					// Our own hold, unlocked as the outage begins: its release
					// fails too, and the Lock below waits for it first.
					h := m.NewLock("k")
					if _, err := h.Lock(context.Background()); err != nil {
						t.Fatal(err)
					}
					b.SetUnavailable(true)
					h.Unlock()
				}
				b.SetUnavailable(true)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				start := time.Now()
				_, err := m.NewLock("k").Lock(ctx)
				if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ctxlock.ErrUnavailable) {
					t.Fatalf("Lock during the outage: %v; want DeadlineExceeded with the backend fault", err)
				}
				if el := time.Since(start); el != 5*time.Second {
					t.Fatalf("Lock returned after %v; want at its deadline, 5s", el)
				}
				// 10+20+40+…ms then 1s apiece (jittered): about a dozen in 5s.
				if n := b.attempts.Load(); n < 5 || n > 20 {
					t.Fatalf("%d acquire attempts in 5s of outage; want a dozen or so", n)
				}
				b.SetUnavailable(false)
			})
		})
	}
}

// A Lock that gives up returns when its context ends: it leaves the
// backend's queue in the background (bounded by its AcquireTimeout), and
// Close waits for that.
func TestLockGivesUpAtDeadlineLeavingInBackground(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := heldElsewhere(t, "k")
		b := &gatedLeaver{Backend: store} // its gate never opens: Leave lasts its timeout
		m := ctxlock.NewManager(b)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		_, err := m.NewLock("k", ctxlock.WithAcquireTimeout(5*time.Second)).Lock(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Lock of a held key: %v; want DeadlineExceeded", err)
		}
		if el := time.Since(start); el != time.Second {
			t.Fatalf("Lock returned after %v; want at its deadline, 1s", el)
		}
		if n := b.cut.Load(); n != 0 {
			t.Fatalf("%d Leave calls ended with the Lock call; want it still trying", n)
		}
		closeManager(t, m)
		if el, n := time.Since(start), b.cut.Load(); el != 6*time.Second || n != 1 {
			t.Fatalf("Close returned at %v with %d Leave calls done; want at 6s (the Leave's 5s timeout), after it", el, n)
		}
	})
}

// A Lock at the head of the queue, waiting for our own release of the key
// in flight, goes on when that release fails (and waits for its retry):
// it does not sleep through the outage.
func TestHeadWaitingForReleaseInFlightGoesOnWhenItFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &gatedRelease{attemptCounter: &attemptCounter{Backend: memory.New(), limit: 1000}, entered: make(chan struct{}, 1), gate: make(chan struct{})}
		m := ctxlock.NewManager(b)
		defer closeManager(t, m)
		h := m.NewLock("k")
		if _, err := h.Lock(context.Background()); err != nil {
			t.Fatal(err)
		}
		h.Unlock()
		<-b.entered // the release is in flight on a worker
		before := b.attempts.Load()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() { _, err := m.NewLock("k").Lock(ctx); done <- err }()
		synctest.Wait() // the Lock waits for its turn
		b.SetUnavailable(true)
		close(b.gate) // the release fails, to be retried
		err := <-done
		if n := b.attempts.Load() - before; n == 0 {
			t.Fatalf("Lock made no attempt in 3s (%v): it slept through the failed release", err)
		}
		b.SetUnavailable(false)
	})
}

// heldElsewhere returns a memory store whose keys are held by a Manager of
// its own (closed at the end of the test), for the test's Manager to wait on.
func heldElsewhere(t *testing.T, keys ...string) *memory.Backend {
	store := memory.New()
	holder := ctxlock.NewManager(store)
	t.Cleanup(func() { closeManager(t, holder) })
	for _, key := range keys {
		if _, err := holder.NewLock(key).Lock(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	return store
}

// gatedRelease is an attemptCounter whose releases wait for gate, then fail
// as in an outage.
type gatedRelease struct {
	*attemptCounter
	entered chan struct{}
	gate    chan struct{}
}

func (b *gatedRelease) ReleaseContended(ctx context.Context, leases []ctxlock.Lease) ([]error, []bool) {
	return b.Release(ctx, leases), nil
}

func (b *gatedRelease) Release(ctx context.Context, leases []ctxlock.Lease) []error {
	select {
	case b.entered <- struct{}{}:
	default:
	}
	<-b.gate
	errs := make([]error, len(leases))
	for i := range errs {
		errs[i] = ctxlock.Unavailable(errors.New("down"))
	}
	return errs
}

// gatedLeaver is a memory backend with a WaiterQueue whose Leave completes
// when the test opens gate, unless its context ends first (an unreachable
// server).
type gatedLeaver struct {
	*memory.Backend
	gate      chan struct{}
	done, cut atomic.Int32
}

func (b *gatedLeaver) WatchWaiter(key, waiter string) (<-chan ctxlock.Handoff, func()) {
	return nil, func() {}
}

func (b *gatedLeaver) Leave(ctx context.Context, key, waiter string) error {
	select {
	case <-b.gate:
		b.done.Add(1)
		return nil
	case <-ctx.Done():
		b.cut.Add(1)
		return ctx.Err()
	}
}

// A Lock call that Close wakes still leaves the backend's queue, in line,
// and Close waits for that Leave (not cutting it short): when Close
// returns, the backend may be closed.
func TestLockWokenByCloseLeavesQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := heldElsewhere(t, "k")
		b := &gatedLeaver{Backend: store, gate: make(chan struct{})}
		m := ctxlock.NewManager(b)
		done := make(chan error, 1)
		go func() { _, err := m.NewLock("k").Lock(context.Background()); done <- err }()
		synctest.Wait()
		closed := make(chan error, 1)
		go func() { closed <- m.Close(context.Background()) }()
		synctest.Wait()
		select {
		case err := <-done:
			// It would have left the queue in a goroutine that outlives Close.
			t.Fatalf("Lock returned (%v) before its Leave was answered", err)
		case err := <-closed:
			t.Fatalf("Close returned (%v) before the Leave of the Lock it woke was answered", err)
		default:
		}
		close(b.gate)
		if err := <-done; !errors.Is(err, ctxlock.ErrClosed) {
			t.Fatalf("Lock when its Manager closed: %v; want ErrClosed", err)
		}
		if err := <-closed; err != nil {
			t.Fatalf("Close: %v", err)
		}
		if d, c := b.done.Load(), b.cut.Load(); d != 1 || c != 0 {
			t.Fatalf("Leave calls: %d done, %d cut short; want the one done", d, c)
		}
	})
}

// Close returns when its context ends even while a Lock that gave up is
// still leaving the queue; it says so, and cancels that Leave.
func TestCloseHonoursContextWithLeaveRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := heldElsewhere(t, "k")
		b := &gatedLeaver{Backend: store, gate: make(chan struct{})}
		m := ctxlock.NewManager(b)
		lctx, lcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer lcancel()
		if _, err := m.NewLock("k", ctxlock.WithAcquireTimeout(time.Hour)).Lock(lctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Lock of a held key: %v; want DeadlineExceeded", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := m.Close(ctx)
		if el := time.Since(start); el != 100*time.Millisecond || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "1 waiter-queue leaves cut short") {
			t.Fatalf("Close with a Leave running: %v after %v; want DeadlineExceeded naming the leave, at 100ms", err, el)
		}
		synctest.Wait()
		if d, c := b.done.Load(), b.cut.Load(); d != 0 || c != 1 {
			t.Fatalf("Leave calls: %d done, %d cut short; want the one cut short", d, c)
		}
	})
}

// At most 64 Lock calls that gave up leave the queue in the background at
// once; past that, a call leaves in line and returns that much later.
func TestBackgroundLeavesBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		keys := make([]string, 65) // one Lock call per key: each is its key's head
		for i := range keys {
			keys[i] = fmt.Sprint("k", i)
		}
		store := heldElsewhere(t, keys...)
		b := &gatedLeaver{Backend: store} // Leave lasts its timeout
		m := ctxlock.NewManager(b)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		var mu sync.Mutex
		returned := map[time.Duration]int{}
		var wg sync.WaitGroup
		for _, k := range keys {
			wg.Go(func() {
				m.NewLock(k, ctxlock.WithAcquireTimeout(5*time.Second)).Lock(ctx)
				mu.Lock()
				returned[time.Since(start)]++
				mu.Unlock()
			})
		}
		wg.Wait()
		if len(returned) != 2 || returned[time.Second] != 64 || returned[6*time.Second] != 1 {
			t.Fatalf("Lock calls returned at %v; want 64 at their 1s deadline and one 5s (its Leave) later", returned)
		}
		closeManager(t, m)
	})
}

// quorumLoser is a memory backend whose Extend reports every lease lost
// while the store keeps it, as a backend over several stores does when too
// few of them still have a lease (redlock): the rest may hold it.
type quorumLoser struct{ *memory.Backend }

func (b quorumLoser) Extend(ctx context.Context, leases []ctxlock.Lease, ttl time.Duration) []error {
	errs := make([]error, len(leases))
	for i := range errs {
		errs[i] = fmt.Errorf("test: %w", ctxlock.ErrLost)
	}
	return errs
}

// A hold that a refresh reports lost ends with ErrLost, and its lease is
// still released (owner-checked), so that no store left holding it keeps
// the key until its TTL.
func TestLostHoldIsReleased(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		be := quorumLoser{memory.New()}
		defer be.Close()
		m := ctxlock.NewManager(be)
		defer closeManager(t, m)
		l := m.NewLock("k", ctxlock.WithTTL(time.Hour))
		expired, err := l.Lock(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		<-expired
		if !errors.Is(l.Err(), ctxlock.ErrLost) {
			t.Fatalf("Err = %v, want ErrLost", l.Err())
		}
		synctest.Wait()
		if owner, _, _, _, held := be.Holder("k"); held {
			t.Fatalf("the store still holds the lost hold's lease (owner %q) after the hold ended", owner)
		}
	})
}

// gatedAcquire is a memory backend whose Acquire waits for gate before it
// takes the key.
type gatedAcquire struct {
	*memory.Backend
	gate chan struct{}
}

func (b gatedAcquire) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	<-b.gate
	return b.Backend.Acquire(ctx, req)
}

// Close waits for a backend attempt in flight, and for the release of the
// lease it took as Close began: when Close returns the backend may be
// closed, and nothing is left holding the key.
func TestCloseWaitsForAttemptInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		be := gatedAcquire{memory.New(), make(chan struct{})}
		defer be.Close()
		m := ctxlock.NewManager(be)
		locked := make(chan error, 1)
		go func() {
			_, err := m.NewLock("k").Lock(context.Background())
			locked <- err
		}()
		synctest.Wait() // the attempt waits in the backend
		closed := make(chan error, 1)
		go func() { closed <- m.Close(context.Background()) }()
		synctest.Wait()
		select {
		case err := <-closed:
			t.Fatalf("Close returned (%v) while an acquire attempt was in flight", err)
		default:
		}
		close(be.gate)
		if err := <-closed; err != nil {
			t.Fatalf("Close: %v", err)
		}
		if owner, _, _, _, held := be.Holder("k"); held {
			t.Fatalf("the key is held (owner %q) after Close returned: the lease the attempt took was not given back", owner)
		}
		if err := <-locked; !errors.Is(err, ctxlock.ErrClosed) {
			t.Fatalf("Lock = %v, want ErrClosed", err)
		}
	})
}

// failingAcquires is an attemptCounter whose acquires fail with a transient
// fault after reaching the store (their outcome unknown), while releases
// work.
type failingAcquires struct{ *attemptCounter }

func (b failingAcquires) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	if err := b.count(); err != nil {
		return ctxlock.Lease{}, err
	}
	return ctxlock.Lease{}, ctxlock.Unavailable(errors.New("test: acquire failed"))
}

// A Lock whose attempts fail transiently while releases work still backs
// off: the (successful) release of each failed attempt's lease does not
// cut its backoff short. It retried at once instead, tens of thousands of
// times a second.
func TestLockBacksOffWhenOnlyAcquiresFail(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := failingAcquires{&attemptCounter{Backend: memory.New(), limit: 100}}
		m := ctxlock.NewManager(b)
		defer closeManager(t, m)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := m.NewLock("k").Lock(ctx)
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ctxlock.ErrUnavailable) {
			t.Fatalf("Lock while acquires fail: %v; want DeadlineExceeded with the fault joined", err)
		}
		// 10+20+40+…ms then 1s apiece (jittered): about a dozen in 5s.
		if n := b.attempts.Load(); n < 5 || n > 20 {
			t.Fatalf("%d acquire attempts in 5s; want a dozen or so", n)
		}
	})
}

// failingExtends is a memory backend whose Extend fails transiently while
// failing is set (the store itself healthy).
type failingExtends struct {
	*memory.Backend
	failing atomic.Bool
}

func (b *failingExtends) Extend(ctx context.Context, leases []ctxlock.Lease, ttl time.Duration) []error {
	if b.failing.Load() {
		errs := make([]error, len(leases))
		for i := range errs {
			errs[i] = ctxlock.Unavailable(errors.New("test: extend failed"))
		}
		return errs
	}
	return b.Backend.Extend(ctx, leases, ttl)
}

// Health reports holds whose latest refresh failed, while the backend's
// own health is fine, and stops once a refresh succeeds or the hold ends.
func TestHealthReportsFailingRefreshes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &failingExtends{Backend: memory.New()}
		m := ctxlock.NewManager(b)
		defer closeManager(t, m)
		failing := func() bool {
			t.Helper()
			conds, err := m.Health(context.Background())
			if err != nil {
				t.Fatalf("Health: %v", err)
			}
			return slices.ContainsFunc(conds, func(c string) bool { return strings.HasPrefix(c, "holds whose refresh is failing") })
		}
		l := m.NewLock("k", ctxlock.WithTTL(time.Minute), ctxlock.WithRefreshInterval(20*time.Second))
		if _, err := l.Lock(context.Background()); err != nil {
			t.Fatal(err)
		}
		b.failing.Store(true)
		time.Sleep(25 * time.Second) // past the first refresh
		if !failing() {
			t.Fatal("Health does not report the hold whose refresh fails")
		}
		b.failing.Store(false)
		time.Sleep(15 * time.Second) // a retry succeeds
		if failing() {
			t.Fatal("Health still reports a failing refresh after one succeeded")
		}
		b.failing.Store(true)
		time.Sleep(25 * time.Second)
		if !failing() {
			t.Fatal("Health does not report the failing refresh again")
		}
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
		if failing() {
			t.Fatal("Health reports a failing refresh of a hold that ended")
		}
		b.failing.Store(false)
	})
}

// A TTL of a few milliseconds, longer than the drift allowance as WithTTL
// asks, works with the default refresh interval: TTL/3 (1ms of a 3ms TTL)
// would not fit in the 0.97ms validity window, so the default is half the
// window there, and the hold lives on, refreshed.
func TestTinyTTLWithDefaultRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := ctxlock.NewManager(memory.New())
		defer closeManager(t, m)
		l := m.NewLock("k", ctxlock.WithTTL(3*time.Millisecond))
		exp, err := l.Lock(context.Background())
		if err != nil {
			t.Fatalf("Lock with a 3ms TTL: %v", err)
		}
		time.Sleep(time.Second)
		select {
		case <-exp:
			t.Fatalf("a 3ms hold ended within a second on a healthy backend: %v", l.Err())
		default:
		}
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
	})
}

// lostRefreshReplies is a memory backend whose refreshes reach the store
// but whose answers are lost: every Extend extends the leases and reports
// a fault.
type lostRefreshReplies struct{ *memory.Backend }

func (b lostRefreshReplies) Extend(ctx context.Context, leases []ctxlock.Lease, ttl time.Duration) []error {
	b.Backend.Extend(ctx, leases, ttl)
	errs := make([]error, len(leases))
	for i := range errs {
		errs[i] = ctxlock.Unavailable(errors.New("reply lost"))
	}
	return errs
}

// An expired hold's lease, which may still be on the server (here the
// refreshes extended it, their answers lost), is released, well before its
// TTL, but only once the drift allowance after the validity deadline has
// passed: the time the holder would have had to notice its closed channel
// had the lease simply lapsed. Until then nobody takes the key, in another
// Manager or in the holder's own. It used to be released at once.
func TestExpiredLeaseReleasedAfterGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := lostRefreshReplies{memory.New()}
		m, other := ctxlock.NewManager(b), ctxlock.NewManager(b)
		defer closeManager(t, other)
		defer closeManager(t, m)
		ctx := context.Background()
		const ttl = time.Second
		allowance := time.Duration(float64(ttl)*ctxlock.DefaultDriftFactor) + 2*time.Millisecond
		l := m.NewLock("k", ctxlock.WithTTL(ttl))
		exp, err := l.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		<-exp
		if got, want := time.Since(start), ttl-allowance; !errors.Is(l.Err(), ctxlock.ErrExpired) || got != want {
			t.Fatalf("hold ended after %v with %v; want ErrExpired at the validity deadline, %v", got, l.Err(), want)
		}
		time.Sleep(allowance - time.Millisecond)
		if ok, _, err := other.NewLock("k").TryLock(ctx); ok || err != nil {
			t.Fatalf("another Manager's TryLock within the grace after expiry = %v, %v; want false, nil", ok, err)
		}
		if ok, _, err := m.NewLock("k").TryLock(ctx); ok || err != nil {
			t.Fatalf("the holder's Manager's TryLock within the grace = %v, %v; want false, nil", ok, err)
		}
		time.Sleep(2 * time.Millisecond)
		synctest.Wait()
		ol := other.NewLock("k")
		if ok, _, err := ol.TryLock(ctx); !ok || err != nil {
			t.Fatalf("another Manager's TryLock after the grace, with the lease extended for long after = %v, %v; want true", ok, err)
		}
		ol.Unlock()
	})
}
