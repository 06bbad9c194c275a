package ctxlock_test

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// rawTimeoutBackend takes the lease on its first Acquire and then reports a
// bare timeout, not marked with ErrUnavailable, as a driver's timeout
// would be if a third-party backend passed it on: the outcome is unknown.
type rawTimeoutBackend struct {
	ctxlock.Backend
	timeout error
	calls   atomic.Int32
}

func (b *rawTimeoutBackend) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	l, err := b.Backend.Acquire(ctx, req)
	if b.calls.Add(1) == 1 && err == nil {
		return ctxlock.Lease{}, b.timeout
	}
	return l, err
}

// A timeout a backend reports without marking it transient is still one:
// the attempt's outcome is unknown, so the Manager retries (Lock) or says
// ErrUnavailable (TryLock), and releases what the attempt may have taken,
// instead of failing for good and leaving the key held for its TTL.
func TestBareTimeoutFromBackendIsTransient(t *testing.T) {
	for name, timeout := range map[string]error{
		"context.DeadlineExceeded": context.DeadlineExceeded,
		"os.ErrDeadlineExceeded":   os.ErrDeadlineExceeded,
	} {
		t.Run(name+"/TryLock", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mem := memory.New()
				m := ctxlock.NewManager(&rawTimeoutBackend{Backend: mem, timeout: timeout})
				defer m.Close(context.Background())
				ok, _, err := m.NewLock("k", ctxlock.WithTTL(time.Hour)).TryLock(context.Background())
				if ok || !errors.Is(err, ctxlock.ErrUnavailable) {
					t.Fatalf("TryLock = %v, %v; want false and an error matching ErrUnavailable", ok, err)
				}
				synctest.Wait() // the ambiguous attempt's release
				if _, _, _, rem, held := mem.Holder("k"); held {
					t.Fatalf("the key is still held (for %v) after the ambiguous attempt", rem)
				}
			})
		})
		t.Run(name+"/Lock", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mem := memory.New()
				m := ctxlock.NewManager(&rawTimeoutBackend{Backend: mem, timeout: timeout})
				defer m.Close(context.Background())
				start := time.Now()
				if _, err := m.NewLock("k", ctxlock.WithTTL(time.Hour)).Lock(context.Background()); err != nil {
					t.Fatalf("Lock after a bare timeout: %v; want it retried", err)
				}
				if el := time.Since(start); el >= time.Hour {
					t.Errorf("Lock took %v: it waited for the ambiguous attempt's lease to lapse", el)
				}
			})
		})
	}
}
