package ctxlock_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"

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
