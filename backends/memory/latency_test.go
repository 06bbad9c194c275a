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

// SetLatency "adds d to every call", Health included (Close's doc: a closed
// store's Health fails with ErrClosed after any latency set), and a call
// whose context ends first fails with an error matching ErrUnavailable.
func TestLatencyDelaysHealth(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := memory.New()
		defer b.Close()
		b.SetLatency(time.Minute)

		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		_, err := b.Health(ctx)
		if !errors.Is(err, ctxlock.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != time.Second {
			t.Fatalf("Health of a store slower than ctx: %v after %v; want ErrUnavailable and DeadlineExceeded after 1s", err, time.Since(start))
		}

		start = time.Now()
		if _, err := b.Health(context.Background()); err != nil || time.Since(start) != time.Minute {
			t.Fatalf("Health with a latency of 1m: %v after %v; want nil after 1m", err, time.Since(start))
		}

		b.Close()
		b.SetUnavailable(true)
		start = time.Now()
		if _, err := b.Health(context.Background()); !errors.Is(err, memory.ErrClosed) || time.Since(start) != time.Minute {
			t.Fatalf("Health of a closed store: %v after %v; want ErrClosed after the latency", err, time.Since(start))
		}
	})
}

// Stats: Relock counts as a Release call of one lease (its release step),
// as it counts as an Acquire (its acquire step).
func TestStatsCountRelock(t *testing.T) {
	ctx := context.Background()
	b := memory.New()
	defer b.Close()
	req := ctxlock.AcquireRequest{Key: "k", Owner: "a", TTL: time.Second, Timeout: time.Second}
	old, err := b.Acquire(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	req.Owner = "b"
	if _, _, _, err := b.Relock(ctx, old, req); err != nil {
		t.Fatal(err)
	}
	if got, want := b.Stats(), (memory.Stats{Acquires: 2, ReleaseCalls: 1, ReleasedLeases: 1}); got != want {
		t.Fatalf("Stats after Acquire and Relock: %+v; want %+v", got, want)
	}
}
