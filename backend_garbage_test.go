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

// wrongGrant is a memory store whose Acquire takes the key for the owner
// asked for, but answers with a lease of another owner (or key): a broken
// backend (Backend.Acquire: "the Manager refuses any other").
type wrongGrant struct {
	*memory.Backend
	wrongKey bool
}

func (b wrongGrant) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	lease, err := b.Backend.Acquire(ctx, req)
	if err == nil {
		if b.wrongKey {
			lease.Key += "-other"
		} else {
			lease.Owner = "someone-else"
		}
	}
	return lease, err
}

// A lease granted for another owner or key is refused: Lock and TryLock fail
// at once (a permanent error, not a hold, not a wait), and the owner the
// Manager asked for is released, so the key the broken backend did take for
// it is free again at once, not only after its TTL.
func TestWrongGrantRefusedAndReleased(t *testing.T) {
	for _, wrongKey := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			mem := memory.New()
			m := ctxlock.NewManager(wrongGrant{mem, wrongKey})
			defer closeManager(t, m)
			l := m.NewLock("k", ctxlock.WithTTL(time.Hour))
			exp, err := l.Lock(context.Background())
			if err == nil || exp != nil || !strings.Contains(err.Error(), "granted a lease") {
				t.Fatalf("Lock = (%v, %v); want a refused grant", exp, err)
			}
			if errors.Is(err, ctxlock.ErrHeld) || errors.Is(err, ctxlock.ErrUnavailable) {
				t.Errorf("Lock error %v matches ErrHeld or ErrUnavailable; a refused grant is neither", err)
			}
			if l.Token() != 0 {
				t.Errorf("Token = %d after a refused grant", l.Token())
			}
			synctest.Wait() // the scheduler's release of the owner asked for
			if owner, _, _, rem, ok := mem.Holder("k"); ok {
				t.Fatalf("key still held by %q for %v after the refused grant", owner, rem)
			}
			ok, exp, err := l.TryLock(context.Background())
			if ok || exp != nil || err == nil || !strings.Contains(err.Error(), "granted a lease") {
				t.Errorf("TryLock = (%v, %v, %v); want a refused grant", ok, exp, err)
			}
			synctest.Wait()
			if _, _, _, _, ok := mem.Holder("k"); ok {
				t.Error("key still held after TryLock's refused grant")
			}
		})
	}
}

// batchAnswer is a memory store whose Extend and Release perform the batch
// but answer with nil (every lease succeeded, which the Manager accepts) or
// with a slice of the wrong length (which it must not index blindly).
type batchAnswer struct {
	*memory.Backend
	short    bool // answer an empty, non-nil slice instead of nil
	extends  atomic.Int64
	releases atomic.Int64
}

func (b *batchAnswer) answer(errs []error) []error {
	if b.short {
		return []error{}
	}
	return nil
}

func (b *batchAnswer) Extend(ctx context.Context, ls []ctxlock.Lease, ttl time.Duration) []error {
	b.extends.Add(1)
	return b.answer(b.Backend.Extend(ctx, ls, ttl))
}

func (b *batchAnswer) Release(ctx context.Context, ls []ctxlock.Lease) []error {
	b.releases.Add(1)
	return b.answer(b.Backend.Release(ctx, ls))
}

// Hide memory's ReleaseContended and Relock: the Manager must use Release.
func (b *batchAnswer) ReleaseContended() {}
func (b *batchAnswer) Relock()           {}

// A nil result slice from Extend and Release means every lease succeeded
// (Backend: "The Manager, to be lenient, takes a nil slice as every lease
// succeeding"): the hold outlives many TTLs, and Unlock's release is
// confirmed (no pending release left).
func TestNilBatchResultsMeanSuccess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &batchAnswer{Backend: memory.New()}
		m := ctxlock.NewManager(b)
		defer closeManager(t, m)
		l := m.NewLock("k", ctxlock.WithTTL(time.Second))
		exp, err := l.Lock(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-exp:
			t.Fatalf("hold ended on a backend answering nil (success): %v", l.Err())
		case <-time.After(10 * time.Second):
		}
		if n := b.extends.Load(); n < 10 {
			t.Errorf("%d Extend calls in 10 TTLs", n)
		}
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		conds, err := m.Health(context.Background())
		if err != nil || slices.ContainsFunc(conds, func(c string) bool { return strings.Contains(c, "pending") }) {
			t.Errorf("Health after a confirmed release = %q, %v", conds, err)
		}
		if _, _, _, _, ok := b.Holder("k"); ok {
			t.Error("key still held after Unlock")
		}
	})
}

// A batch answer of the wrong length is a failure of every lease in it, a
// transient one (it says nothing of the leases): no panic, the hold is not
// lost but ends with ErrExpired at its validity deadline, as on an
// unreachable backend, and Health reports its failing refresh.
func TestWrongLengthBatchResultsAreTransientFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &batchAnswer{Backend: memory.New(), short: true}
		m := ctxlock.NewManager(b)
		defer closeManager(t, m)
		const ttl = 3 * time.Second
		deadline := time.Now().Add(ttl - (time.Duration(float64(ttl)*ctxlock.DefaultDriftFactor) + 2*time.Millisecond))
		l := m.NewLock("k", ctxlock.WithTTL(ttl))
		exp, err := l.Lock(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(ttl / 2) // fake time: past the first refresh (ttl/3)
		conds, err := m.Health(context.Background())
		if err != nil || !slices.ContainsFunc(conds, func(c string) bool { return strings.Contains(c, "refresh is failing: 1") }) {
			t.Errorf("Health = %q, %v; want the failing refresh reported", conds, err)
		}
		<-exp
		if now := time.Now(); now.After(deadline) {
			t.Errorf("hold ended %v after its validity deadline", now.Sub(deadline))
		}
		if err := l.Err(); !errors.Is(err, ctxlock.ErrExpired) || errors.Is(err, ctxlock.ErrLost) {
			t.Errorf("Err = %v; want ErrExpired (a malformed answer is not a loss)", err)
		}
		if n := b.extends.Load(); n < 2 {
			t.Errorf("%d Extend calls; want retries after the malformed answer", n)
		}
	})
}

// closedWatch is a memory store whose Watch returns a closed channel: a
// broken backend whose notifications must not make a waiter spin.
type closedWatch struct {
	*memory.Backend
	attempts atomic.Int64
}

func (b *closedWatch) Watch(key string) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	close(ch)
	return ch, func() {}
}

func (b *closedWatch) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	if b.attempts.Add(1) > 1000 {
		// Spinning: fail the call rather than hang the bubble.
		return ctxlock.Lease{}, errors.New("spinning on a closed watch channel")
	}
	return b.Backend.Acquire(ctx, req)
}

// A Lock waiting on a backend whose Watch channel is closed polls with
// backoff (as with a nil channel) instead of retrying in a loop, and still
// acquires the key once it is released, within MaxRetryDelay.
func TestClosedWatchChannelPollsInsteadOfSpinning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &closedWatch{Backend: memory.New()}
		holder := leaseElsewhere(t, b.Backend, "k")
		m := ctxlock.NewManager(b)
		defer closeManager(t, m)
		l := m.NewLock("k")
		type res struct {
			exp <-chan struct{}
			err error
		}
		done := make(chan res, 1)
		go func() { exp, err := l.Lock(context.Background()); done <- res{exp, err} }()
		time.Sleep(10 * time.Second)
		// Backoff from 10ms doubling to 1s: about 17 attempts in 10s.
		if n := b.attempts.Load(); n > 40 {
			t.Errorf("%d attempts in 10s of waiting; want polling with backoff", n)
		}
		released := time.Now()
		b.Backend.Release(context.Background(), []ctxlock.Lease{holder})
		r := <-done
		if r.err != nil {
			t.Fatalf("Lock: %v", r.err)
		}
		if d := time.Since(released); d > ctxlock.MaxRetryDelay {
			t.Errorf("acquired %v after the release; want within MaxRetryDelay", d)
		}
		l.Unlock()
	})
}
