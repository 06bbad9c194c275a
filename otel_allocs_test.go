package ctxlock_test

import (
	"context"
	"slices"
	"testing"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// allocsPerCycle measures the allocations of cycle on a fresh Manager over
// the memory backend, the median of five rounds (see
// TestOtelNoopProvidersAllocateLikeUnconfigured for why).
func allocsPerCycle(t *testing.T, bare bool, cycle func(t *testing.T, l ctxlock.Lock)) float64 {
	t.Helper()
	var xs []float64
	for range 5 {
		m := ctxlock.NewManager(memory.New())
		if bare {
			ctxlock.NoInstrumentation(m)
		}
		l := m.NewLock("bench")
		cycle(t, l) // warm up
		xs = append(xs, testing.AllocsPerRun(2000, func() { cycle(t, l) }))
		m.Close(context.Background())
	}
	slices.Sort(xs)
	return xs[len(xs)/2]
}

// With no provider given (the otel globals, never set in this test binary),
// Lock, TryLock and Unlock allocate no more than with no instrumentation at
// all (DESIGN §5: "no allocation on the hot path").
func TestOtelUnconfiguredAllocatesLikeNoInstrumentation(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counting")
	}
	ctx := context.Background()
	cycles := map[string]func(t *testing.T, l ctxlock.Lock){
		"Lock+Unlock": func(t *testing.T, l ctxlock.Lock) {
			if _, err := l.Lock(ctx); err != nil {
				t.Fatal(err)
			}
			if err := l.Unlock(); err != nil {
				t.Fatal(err)
			}
		},
		"TryLock+Unlock": func(t *testing.T, l ctxlock.Lock) {
			if ok, _, err := l.TryLock(ctx); !ok || err != nil {
				t.Fatal(ok, err)
			}
			if err := l.Unlock(); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, cycle := range cycles {
		bare := allocsPerCycle(t, true, cycle)
		unconfigured := allocsPerCycle(t, false, cycle)
		t.Logf("%s: no instrumentation %.2f allocs, unconfigured %.2f", name, bare, unconfigured)
		if unconfigured > bare+0.5 {
			t.Errorf("%s: unconfigured instrumentation %.2f allocs, none %.2f; want the same", name, unconfigured, bare)
		}
	}
}
