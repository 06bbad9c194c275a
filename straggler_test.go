package ctxlock_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// straggler is a memory store whose armed Acquire gives up on the client
// at its timeout while its request is still on its way: the acquire
// reaches the store late after it was sent, when nobody waits for it any
// more (a delayed packet on a connection the client has dropped).
type straggler struct {
	*memory.Backend
	late   time.Duration
	armed  atomic.Bool
	landed chan struct{} // closed once the late acquire has reached the store
}

func (b *straggler) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	if !b.armed.CompareAndSwap(true, false) {
		return b.Backend.Acquire(ctx, req)
	}
	time.AfterFunc(b.late, func() {
		_, _ = b.Backend.Acquire(context.Background(), req)
		close(b.landed)
	})
	ctx, cancel := context.WithTimeout(ctx, req.Timeout)
	defer cancel()
	<-ctx.Done()
	return ctxlock.Lease{}, ctxlock.Unavailable(errors.New("test: attempt timed out, request still in flight"))
}

func pendingReleases(t *testing.T, m *ctxlock.Manager) bool {
	t.Helper()
	conds, _ := m.Health(context.Background())
	return slices.ContainsFunc(conds, func(c string) bool { return strings.HasPrefix(c, "pending releases") })
}

// An attempt of unknown outcome is released at once, and that release finds
// nothing when the attempt's request is still on its way. When the request
// lands later it takes the key for an owner nobody releases: the Manager
// repeats the attempt's release (owner-checked, so harmlessly) until the
// lease would have lapsed, so that such a straggler blocks the key for about
// as long as it was late, not for a whole TTL. The repeats are not pending
// releases, Close does not wait for them, and they stop at the lapse.
func TestStragglingAcquireReleasedAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			ttl     = 10 * time.Second
			timeout = 200 * time.Millisecond
			late    = 1500 * time.Millisecond
		)
		mem := memory.New()
		defer mem.Close()
		b := &straggler{Backend: mem, late: late, landed: make(chan struct{})}
		m := ctxlock.NewManager(b)
		defer closeManager(t, m)
		l := m.NewLock("k", ctxlock.WithTTL(ttl), ctxlock.WithAcquireTimeout(timeout))

		start := time.Now()
		b.armed.Store(true)
		if ok, _, err := l.TryLock(context.Background()); ok || !errors.Is(err, ctxlock.ErrUnavailable) {
			t.Fatalf("TryLock = %v, %v; want a transient failure", ok, err)
		}
		synctest.Wait() // the attempt's release went out and found nothing
		if n := mem.Stats().ReleaseCalls; n != 1 {
			t.Fatalf("%d release calls after the attempt; want 1", n)
		}
		if pendingReleases(t, m) {
			t.Fatal("Health reports pending releases once the attempt's release was confirmed")
		}

		<-b.landed
		if _, _, _, rem, ok := mem.Holder("k"); !ok || rem != ttl {
			t.Fatalf("after the straggler landed: held %v for %v; want held for %v", ok, rem, ttl)
		}
		// Another process waits for the key: it gets it soon after the
		// straggler landed (at the next repeat), not a TTL later.
		other := ctxlock.NewManager(mem)
		defer closeManager(t, other)
		ctx, cancel := context.WithTimeout(context.Background(), ttl/2)
		defer cancel()
		if _, err := other.NewLock("k").Lock(ctx); err != nil {
			t.Fatalf("the key stayed blocked by the straggler's orphaned lease: %v", err)
		}
		if waited := time.Since(start); waited > 2*late {
			t.Errorf("the key was free again %v after the attempt; want at most %v", waited, 2*late)
		}
		if pendingReleases(t, m) {
			t.Error("Health reports the repeats as pending releases")
		}

		// The repeats stop once the attempt's lease would have lapsed.
		time.Sleep(ttl + time.Second)
		synctest.Wait()
		n := mem.Stats().ReleaseCalls
		if n > 10 {
			t.Errorf("%d release calls in a TTL; want a few repeats at doubling intervals", n)
		}
		time.Sleep(10 * ttl)
		synctest.Wait()
		if again := mem.Stats().ReleaseCalls; again != n {
			t.Errorf("%d more release calls after the lease would have lapsed; want none", again-n)
		}
		closeManager(t, m)
	})
}

// Close sends each queued repeat of a released attempt once more, at once,
// and no more after it: it does not keep Close for the rest of the
// repeats' schedule (up to a TTL).
func TestCloseSendsRepeatsOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memory.New()
		defer mem.Close()
		b := &straggler{Backend: mem, late: time.Hour, landed: make(chan struct{})}
		m := ctxlock.NewManager(b)
		defer closeManager(t, m)
		l := m.NewLock("k", ctxlock.WithTTL(time.Minute), ctxlock.WithAcquireTimeout(time.Second))
		b.armed.Store(true)
		if ok, _, err := l.TryLock(context.Background()); ok || err == nil {
			t.Fatalf("TryLock = %v, %v; want a transient failure", ok, err)
		}
		time.Sleep(3 * time.Second) // a repeat or two went out; the next is due in seconds
		synctest.Wait()
		n := mem.Stats().ReleaseCalls
		start := time.Now()
		closeManager(t, m)
		if d := time.Since(start); d != 0 {
			t.Errorf("Close took %v: it waited for the repeats' schedule", d)
		}
		if sent := mem.Stats().ReleaseCalls - n; sent != 1 {
			t.Errorf("Close sent %d releases; want the queued repeat once", sent)
		}
		n = mem.Stats().ReleaseCalls
		time.Sleep(time.Hour + time.Minute)
		synctest.Wait()
		if again := mem.Stats().ReleaseCalls; again != n {
			t.Errorf("%d release calls after Close; want none", again-n)
		}
	})
}

// A straggler that lands after its attempt's release and before the next
// repeat holds the key for an owner nobody releases. When the process
// closes its Manager then, Close's last repeat frees the key: other
// processes do not wait for a TTL for a key held by a process that is gone.
func TestCloseFreesKeyOfStraggler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			ttl     = time.Minute
			timeout = 200 * time.Millisecond
			late    = 250 * time.Millisecond // lands before the first repeat, due 200ms after the release
		)
		mem := memory.New()
		defer mem.Close()
		b := &straggler{Backend: mem, late: late, landed: make(chan struct{})}
		m := ctxlock.NewManager(b)
		l := m.NewLock("k", ctxlock.WithTTL(ttl), ctxlock.WithAcquireTimeout(timeout))
		b.armed.Store(true)
		if ok, _, err := l.TryLock(context.Background()); ok || err == nil {
			t.Fatalf("TryLock = %v, %v; want a transient failure", ok, err)
		}
		<-b.landed
		synctest.Wait()
		if _, _, _, _, held := mem.Holder("k"); !held {
			t.Fatal("the straggler did not take the key")
		}
		closeManager(t, m)
		if _, _, _, rem, held := mem.Holder("k"); held {
			t.Fatalf("after Close the straggler still holds the key for %v", rem)
		}
	})
}

// An attempt answered in time costs one release of its hold and nothing
// more: only attempts of unknown outcome are released again.
func TestAnsweredAttemptsNotReleasedAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memory.New()
		defer mem.Close()
		m := ctxlock.NewManager(mem)
		defer closeManager(t, m)
		holder := ctxlock.NewManager(mem)
		defer closeManager(t, holder)
		if _, err := holder.NewLock("held").Lock(context.Background()); err != nil {
			t.Fatal(err)
		}
		if ok, _, err := m.NewLock("held").TryLock(context.Background()); ok || err != nil {
			t.Fatalf("TryLock of a held key = %v, %v; want refused", ok, err)
		}
		l := m.NewLock("k", ctxlock.WithTTL(time.Second))
		if _, err := l.Lock(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := mem.Stats().ReleaseCalls; n != 1 {
			t.Errorf("%d release calls; want 1, the hold's", n)
		}
	})
}
