package ctxlock_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// stuckHealthBackend's Health answers only when released, or panics.
type stuckHealthBackend struct {
	ctxlock.Backend
	release chan struct{}
	panics  bool
}

func (b stuckHealthBackend) Health(ctx context.Context) ([]string, error) {
	if b.panics {
		panic("health exploded")
	}
	<-b.release
	return nil, nil
}

// Health returns when its ctx is cancelled, with an error matching
// context.Canceled even when ctx was cancelled with a cause, though the
// backend has not answered.
func TestHealthReturnsWhenCtxCancelledWithCause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := stuckHealthBackend{Backend: memory.New(), release: make(chan struct{})}
		m := ctxlock.NewManager(b)
		defer m.Close(context.Background())
		defer close(b.release)
		cause := errors.New("probe gave up")
		ctx, cancel := context.WithCancelCause(context.Background())
		go func() {
			synctest.Wait()
			cancel(cause)
		}()
		conds, err := m.Health(ctx)
		if !errors.Is(err, context.Canceled) || !errors.Is(err, cause) || len(conds) == 0 {
			t.Fatalf("Health = %q, %v; want a condition and an error matching context.Canceled and the cause", conds, err)
		}
	})
}

// A backend whose Health panics panics in Health's caller, as a direct call
// would, not in a goroutine of its own (which would crash the process).
func TestHealthBackendPanicReachesCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := ctxlock.NewManager(stuckHealthBackend{Backend: memory.New(), panics: true})
		defer m.Close(context.Background())
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		defer func() {
			if p := recover(); p != "health exploded" {
				t.Fatalf("recovered %v; want the backend's panic", p)
			}
		}()
		m.Health(ctx)
		t.Fatal("Health returned; want the backend's panic")
	})
}

// healthLeftRunning returns a Manager with a Health call whose caller
// stopped waiting (its ctx cancelled) while the backend's check, which
// answers when b.release is closed, goes on.
func healthLeftRunning(t *testing.T) (stuckHealthBackend, *ctxlock.Manager) {
	b := stuckHealthBackend{Backend: memory.New(), release: make(chan struct{})}
	m := ctxlock.NewManager(b)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		synctest.Wait()
		cancel()
	}()
	if _, err := m.Health(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Health = %v; want context.Canceled", err)
	}
	return b, m
}

// A Health call whose caller stopped waiting leaves the backend's check
// running; Close waits for it, as for its workers, so that nothing the
// Manager started still uses the backend when Close returns. A Close whose
// ctx ends first returns then and says the check is still in flight.
func TestCloseWaitsForHealthCheckLeftRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, m := healthLeftRunning(t)

		cctx, ccancel := context.WithTimeout(context.Background(), time.Second)
		defer ccancel()
		err := m.Close(cctx)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "health checks still in flight") {
			t.Fatalf("Close with the check still running = %v; want DeadlineExceeded saying health checks are in flight", err)
		}
		close(b.release)
	})

	synctest.Test(t, func(t *testing.T) {
		b, m := healthLeftRunning(t)
		closed := make(chan error, 1)
		go func() { closed <- m.Close(context.Background()) }()
		synctest.Wait()
		select {
		case err := <-closed:
			t.Fatalf("Close returned (%v) while a Health check was still in the backend", err)
		default:
		}
		close(b.release)
		if err := <-closed; err != nil {
			t.Fatalf("Close = %v; want nil once the check ended", err)
		}
	})
}
