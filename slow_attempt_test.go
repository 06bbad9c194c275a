package ctxlock_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// An acquire answered after the hold's validity window is a transient
// fault (a backend too slow for the TTL), like a timeout: TryLock reports
// it as ErrUnavailable, and the lease it took does not stay behind.
func TestTryLockSlowerThanValidityIsUnavailable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memory.New()
		// Only the acquire is slow: with the store's latency switch the
		// give-back, dispatched as TryLock returns, could read the latency
		// before the test turned it off, and land after the lease lapsed.
		b := &slowAcquires{Backend: mem}
		m := ctxlock.NewManager(b)
		defer m.Close(context.Background())
		l := m.NewLock("k", ctxlock.WithTTL(50*time.Millisecond), ctxlock.WithAcquireTimeout(time.Second))

		b.latency.Store(int64(60 * time.Millisecond))
		ok, expired, err := l.TryLock(context.Background())
		if ok || expired != nil || !errors.Is(err, ctxlock.ErrUnavailable) {
			t.Fatalf("TryLock = %v, %v, %v; want false, nil, an error matching ErrUnavailable", ok, expired, err)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("TryLock error %v matches context.DeadlineExceeded; ctx was live and the attempt in time", err)
		}

		b.latency.Store(0)
		synctest.Wait() // the slow attempt's lease is given back
		other := ctxlock.NewManager(mem)
		defer other.Close(context.Background())
		ok, _, err = other.NewLock("k").TryLock(context.Background())
		if !ok || err != nil {
			t.Fatalf("TryLock from another Manager after the slow attempt = %v, %v; want the key free", ok, err)
		}
	})
}

// slowAcquires is a memory store whose Acquire reaches the store latency
// late (as its latency switch does, for this call alone): the lease it
// takes then lasts its whole TTL from the answer on.
type slowAcquires struct {
	*memory.Backend
	latency atomic.Int64
}

func (b *slowAcquires) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	if d := time.Duration(b.latency.Load()); d > 0 {
		time.Sleep(d)
	}
	return b.Backend.Acquire(ctx, req)
}

// Lock keeps retrying a backend too slow for the TTL, and when its context
// ends the fault is joined to the context's error.
func TestLockSlowerThanValidityJoinsUnavailable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := memory.New()
		m := ctxlock.NewManager(b)
		defer m.Close(context.Background())
		l := m.NewLock("k", ctxlock.WithTTL(50*time.Millisecond), ctxlock.WithAcquireTimeout(time.Second))

		b.SetLatency(60 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := l.Lock(ctx)
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ctxlock.ErrUnavailable) {
			t.Fatalf("Lock = %v; want context.DeadlineExceeded joined with ErrUnavailable", err)
		}
		b.SetLatency(0)
	})
}
