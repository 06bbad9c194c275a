package ctxlock_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// spinCounter counts backend calls per fake-time instant and fails them
// for good past a limit, so that a spinning loop ends instead of keeping
// fake time from moving.
type spinCounter struct {
	*memory.Backend
	mu      sync.Mutex
	at      time.Time
	sameNow int
	maxSame int
}

var errSpin = errors.New("test: backend called in a hot loop")

func (b *spinCounter) count() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if now := time.Now(); now.Equal(b.at) {
		b.sameNow++
	} else {
		b.at, b.sameNow = now, 1
	}
	b.maxSame = max(b.maxSame, b.sameNow)
	if b.sameNow > 1000 {
		return errSpin
	}
	return nil
}

func (b *spinCounter) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	if err := b.count(); err != nil {
		return ctxlock.Lease{}, err
	}
	return b.Backend.Acquire(ctx, req)
}

func (b *spinCounter) Extend(ctx context.Context, ls []ctxlock.Lease, ttl time.Duration) []error {
	if err := b.count(); err != nil {
		errs := make([]error, len(ls))
		for i := range errs {
			errs[i] = errors.Join(ctxlock.ErrLost, err) // ends the hold, so the spin stops
		}
		return errs
	}
	return b.Backend.Extend(ctx, ls, ttl)
}

// WithRetryDelay accepts any positive delay, and a waiting Lock doubles its
// backoff up to it without overflowing: a 2*d that wrapped around made the
// waiter retry with no delay at all, hammering the backend.
func TestHugeRetryDelayDoesNotSpinLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &spinCounter{Backend: memory.New()}
		holderM := ctxlock.NewManager(b)
		defer holderM.Close(context.Background())
		if _, err := holderM.NewLock("k", ctxlock.WithTTL(time.Second)).Lock(context.Background()); err != nil {
			t.Fatal(err)
		}
		m := ctxlock.NewManager(b)
		defer m.Close(context.Background())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := m.NewLock("k", ctxlock.WithRetryDelay(1<<62)).Lock(ctx)
		if errors.Is(err, errSpin) || b.maxSame > 10 {
			t.Fatalf("waiting Lock made %d acquire attempts at one instant (err %v)", b.maxSame, err)
		}
	})
}

// The refresh backoff (RetryDelay doubled per failure) does not overflow
// either: a RetryDelay << failures that wrapped around had the scheduler
// re-send Extend at once, again and again, during an outage.
func TestHugeRetryDelayDoesNotSpinRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &spinCounter{Backend: memory.New()}
		m := ctxlock.NewManager(b)
		defer m.Close(context.Background())
		l := m.NewLock("k", ctxlock.WithTTL(3*time.Second), ctxlock.WithRetryDelay(1<<62))
		exp, err := l.Lock(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		b.SetUnavailable(true)
		<-exp
		b.SetUnavailable(false)
		if b.maxSame > 10 {
			t.Fatalf("%d Extend calls at one instant during an outage; want a backoff", b.maxSame)
		}
	})
}

// extendCounter counts Extend calls, and past a limit reports the leases
// lost, so that a hot loop ends the hold instead of running for its TTL.
type extendCounter struct {
	*memory.Backend
	mu    sync.Mutex
	calls int
}

func (b *extendCounter) Extend(ctx context.Context, ls []ctxlock.Lease, ttl time.Duration) []error {
	b.mu.Lock()
	b.calls++
	n := b.calls
	b.mu.Unlock()
	if n > 1000 {
		errs := make([]error, len(ls))
		for i := range errs {
			errs[i] = errors.Join(ctxlock.ErrLost, errSpin)
		}
		return errs
	}
	return b.Backend.Extend(ctx, ls, ttl)
}

// The refresh backoff doubles up to half the refresh interval however small
// the retry delay: it stopped doubling after 10 failures, so with a retry
// delay of 1ns a hold whose backend was down re-sent Extend every
// microsecond until its validity ended (found by FuzzHolds).
func TestTinyRetryDelayBacksOffRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &extendCounter{Backend: memory.New()}
		defer b.Close()
		m := ctxlock.NewManager(b)
		defer m.Close(context.Background())
		// Refresh every 100ms, valid 295ms: the retries back off from 1ns
		// to 50ms in about 26 failures, then a few more at 25-50ms.
		l := m.NewLock("k", ctxlock.WithTTL(300*time.Millisecond), ctxlock.WithRetryDelay(time.Nanosecond))
		exp, err := l.Lock(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		b.SetUnavailable(true)
		<-exp
		b.SetUnavailable(false)
		b.mu.Lock()
		calls := b.calls
		b.mu.Unlock()
		if calls > 64 || !errors.Is(l.Err(), ctxlock.ErrExpired) {
			t.Fatalf("%d Extend calls during a 200ms outage, hold ended with %v; want a backoff to 50ms and ErrExpired", calls, l.Err())
		}
	})
}

// A failing refresh of a long lease backs off no further than it did before
// the tiny-delay fix (1,024 retry delays, 10.24s by default), not to half
// the refresh interval (10 minutes for a TTL of an hour): once the backend
// is back, the hold is refreshed within seconds.
func TestLongTTLRefreshRetriesWithinSeconds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &extendCounter{Backend: memory.New()}
		defer b.Close()
		m := ctxlock.NewManager(b)
		defer m.Close(context.Background())
		l := m.NewLock("k", ctxlock.WithTTL(time.Hour))
		exp, err := l.Lock(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		b.SetUnavailable(true)
		time.Sleep(50 * time.Minute) // refreshes fail from 20 minutes on
		synctest.Wait()
		b.SetUnavailable(false)
		b.mu.Lock()
		failed := b.calls
		b.mu.Unlock()
		time.Sleep(11 * time.Second)
		synctest.Wait()
		b.mu.Lock()
		retried := b.calls - failed
		b.mu.Unlock()
		if retried == 0 {
			t.Fatalf("no refresh within 11s of the backend's return (%d failed before)", failed)
		}
		select {
		case <-exp:
			t.Fatalf("hold ended: %v", l.Err())
		default:
		}
	})
}
