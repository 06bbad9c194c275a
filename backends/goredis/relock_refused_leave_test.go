package goredis_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// stealingBackend fails every release until its Relock runs, so that the
// Lock call after an Unlock finds its own release pending and relocks; the
// Relock first hands the key to another owner, so the relock is refused.
type stealingBackend struct {
	*goredis.Backend
	thief   *goredis.Backend
	relocks atomic.Int64
	stolen  atomic.Pointer[ctxlock.Lease]
	queued  atomic.Bool // the first relock was refused and queued its waiter
}

func (b *stealingBackend) Release(ctx context.Context, ls []ctxlock.Lease) []error {
	errs, _ := b.ReleaseContended(ctx, ls)
	return errs
}

func (b *stealingBackend) ReleaseContended(ctx context.Context, ls []ctxlock.Lease) ([]error, []bool) {
	if b.relocks.Load() == 0 {
		errs := make([]error, len(ls))
		for i := range errs {
			errs[i] = ctxlock.Unavailable(errors.New("test: release held back"))
		}
		return errs, nil
	}
	return b.Backend.ReleaseContended(ctx, ls)
}

func (b *stealingBackend) Relock(ctx context.Context, old ctxlock.Lease, req ctxlock.AcquireRequest) (ctxlock.Lease, bool, bool, error) {
	if b.relocks.Add(1) == 1 {
		// old lapses (or is lost) and another owner takes the key.
		if errs := b.Backend.Release(ctx, []ctxlock.Lease{old}); errs[0] != nil {
			return ctxlock.Lease{}, false, false, errs[0]
		}
		l, err := b.thief.Acquire(ctx, ctxlock.AcquireRequest{Key: req.Key, Owner: "thief", TTL: time.Minute, Timeout: time.Second})
		if err != nil {
			return ctxlock.Lease{}, false, false, err
		}
		b.stolen.Store(&l)
		lease, wanted, queued, err := b.Backend.Relock(ctx, old, req)
		b.queued.Store(queued && errors.Is(err, ctxlock.ErrHeld))
		return lease, wanted, queued, err
	}
	return b.Backend.Relock(ctx, old, req)
}

// A Lock call whose relock is refused (and so queued on the server) and
// whose context then ends leaves the server's queue: no ghost waiter keeps
// the key from others after the holder releases it.
func TestRefusedRelockCallLeavesQueueWhenItGivesUp(t *testing.T) {
	s := redistest.StartServer(t)
	obs := s.Client(t)
	thief := newBackend(t, s.Client(t))
	b := &stealingBackend{Backend: newBackend(t, s.Client(t)), thief: thief}
	m := ctxlock.NewManager(b)
	l := m.NewLock("g")
	if _, err := l.Lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := l.Lock(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock of a stolen key: %v, want DeadlineExceeded", err)
	}
	if n := b.relocks.Load(); n == 0 {
		t.Fatal("the Lock call did not relock")
	}
	if !b.queued.Load() {
		t.Fatal("the refused relock did not queue the call's waiter")
	}
	if err := m.Close(context.Background()); err != nil { // waits for the call's leave
		t.Fatal(err)
	}
	lk, _, _ := b.Keys("g")
	if ids, err := obs.LRange(context.Background(), lk+":q", 0, -1).Result(); err != nil || len(ids) != 0 {
		t.Fatalf("queue after the refused relock's Lock call gave up: %q, %v; want empty", ids, err)
	}
	// The key goes to whoever asks once the thief releases it.
	if errs := thief.Release(context.Background(), []ctxlock.Lease{*b.stolen.Load()}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	acquire(t, thief, "g", time.Second)
}
