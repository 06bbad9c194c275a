package memory_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// After Close every call fails with ErrClosed (batches with one error per
// lease), Watch returns a nil channel and a usable stop, and the store's
// timers are stopped: a lease held at Close does not notify its watchers
// when its TTL passes.
func TestClosedBackendFailsEveryCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		b := memory.New()
		req := ctxlock.AcquireRequest{Key: "k", Owner: "o", TTL: time.Second, Timeout: time.Second}
		lease, err := b.Acquire(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		watch, stopWatch := b.Watch("k")
		defer stopWatch()
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second) // past the lease's TTL
		synctest.Wait()
		select {
		case <-watch:
			t.Error("a watcher was notified of a lapse after Close")
		default:
		}

		if _, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: "x", Owner: "o", TTL: time.Second}); !errors.Is(err, memory.ErrClosed) {
			t.Errorf("Acquire: %v; want ErrClosed", err)
		}
		if _, _, _, err := b.Relock(ctx, lease, req); !errors.Is(err, memory.ErrClosed) {
			t.Errorf("Relock: %v; want ErrClosed", err)
		}
		two := []ctxlock.Lease{lease, {Key: "y", Owner: "o"}}
		for name, errs := range map[string][]error{
			"Extend":  b.Extend(ctx, two, time.Second),
			"Release": b.Release(ctx, two),
		} {
			if len(errs) != 2 || !errors.Is(errs[0], memory.ErrClosed) || !errors.Is(errs[1], memory.ErrClosed) {
				t.Errorf("%s: %v; want ErrClosed per lease", name, errs)
			}
		}
		if _, err := b.Health(ctx); !errors.Is(err, memory.ErrClosed) {
			t.Errorf("Health: %v; want ErrClosed", err)
		}
		ch, stop := b.Watch("k")
		if ch != nil || stop == nil {
			t.Errorf("Watch after Close = (%v, stop nil: %v); want a nil channel and a stop", ch, stop == nil)
		}
		stop()
	})
}

// An attempt slower than req.Timeout gives up at the timeout (Backend:
// "It must give up after req.Timeout") with an error matching both
// ErrUnavailable (its outcome is unknown) and context.DeadlineExceeded.
func TestLatencyBeyondTimeoutGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := memory.New()
		defer b.Close()
		b.SetLatency(time.Second)
		start := time.Now()
		_, err := b.Acquire(context.Background(), ctxlock.AcquireRequest{Key: "k", Owner: "o", TTL: time.Minute, Timeout: 100 * time.Millisecond})
		if !errors.Is(err, ctxlock.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Acquire: %v; want ErrUnavailable and DeadlineExceeded", err)
		}
		if d := time.Since(start); d != 100*time.Millisecond {
			t.Errorf("gave up after %v; want the 100ms timeout", d)
		}
		if _, _, _, _, ok := b.Holder("k"); ok {
			t.Error("a timed-out attempt took the key")
		}
		// A bad request is refused, not stored.
		if _, err := b.Acquire(context.Background(), ctxlock.AcquireRequest{Key: "k", Owner: "", TTL: time.Minute}); err == nil {
			t.Error("Acquire with an empty owner succeeded")
		}
	})
}
