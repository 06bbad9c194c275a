package ctxlock_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// slowRelease is a memory store whose releases wait for gate (a slow
// server) before they happen.
type slowRelease struct {
	*memory.Backend
	gate chan struct{}
}

func (b slowRelease) Release(ctx context.Context, ls []ctxlock.Lease) []error {
	<-b.gate
	return b.Backend.Release(ctx, ls)
}

func (b slowRelease) ReleaseContended(ctx context.Context, ls []ctxlock.Lease) ([]error, []bool) {
	<-b.gate
	return b.Backend.ReleaseContended(ctx, ls)
}

// A TryLock of a key whose release by this Manager is in flight waits for
// that release (the key is ours to free), but not past Close: it returns
// ErrClosed as Close begins, and Close still waits for the release.
func TestTryLockWaitingForOwnReleaseReturnsOnClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := slowRelease{memory.New(), make(chan struct{})}
		m := ctxlock.NewManager(b)
		l := m.NewLock("k")
		if _, err := l.Lock(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // the release is in flight, waiting for the gate

		type res struct {
			ok  bool
			err error
		}
		tried := make(chan res, 1)
		go func() { ok, _, err := l.TryLock(context.Background()); tried <- res{ok, err} }()
		synctest.Wait()
		select {
		case r := <-tried:
			t.Fatalf("TryLock returned (%v, %v) with our release in flight; want it to wait", r.ok, r.err)
		default:
		}

		closed := make(chan error, 1)
		go func() { closed <- m.Close(context.Background()) }()
		r := <-tried
		if r.ok || !errors.Is(r.err, ctxlock.ErrClosed) {
			t.Errorf("TryLock as Close began = (%v, %v); want ErrClosed", r.ok, r.err)
		}
		synctest.Wait()
		select {
		case err := <-closed:
			t.Fatalf("Close returned (%v) with a release in flight", err)
		default:
		}
		close(b.gate)
		if err := <-closed; err != nil {
			t.Errorf("Close: %v", err)
		}
		if _, _, _, _, ok := b.Holder("k"); ok {
			t.Error("key still held after Close")
		}
	})
}
