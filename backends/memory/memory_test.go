package memory_test

import (
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/locktest"
	"github.com/ctxlock/ctxlock/backends/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newBackend(t *testing.T) ctxlock.Backend {
	b := memory.New()
	t.Cleanup(func() { b.Close() })
	return b
}

// TestConformance runs the contract on fake time (memory is FakeTimeSafe):
// TTLs of 10s pass in microseconds and every instant is asserted exactly.
func TestConformance(t *testing.T) {
	locktest.Run(t, newBackend)
}

// roundTrips is a memory backend that always has a round trip in flight,
// answered at once: every release of an Unlock waits for it
// (ctxlock.RoundTripNotifier), as with the Redis backend under load.
type roundTrips struct{ *memory.Backend }

func (roundTrips) AfterRoundTrip(f func()) bool {
	go f()
	return true
}

// TestConformanceRoundTripNotifier runs the contract on fake time with the
// releases of Unlocks waiting for the backend's round trips.
func TestConformanceRoundTripNotifier(t *testing.T) {
	locktest.Run(t, func(t *testing.T) ctxlock.Backend {
		return roundTrips{newBackend(t).(*memory.Backend)}
	}, locktest.WithFakeTime())
}

// TestConformanceRealTime runs the same cases on the real clock with a short
// TTL, as networked backends do.
func TestConformanceRealTime(t *testing.T) {
	if testing.Short() {
		t.Skip("real-time conformance run is skipped in -short mode")
	}
	locktest.Run(t, newBackend, locktest.WithRealTime(), locktest.WithTTL(300*time.Millisecond))
}

// locktest.Run tests a FakeTimeSafe backend under fake time without being
// told (DESIGN §4: memory runs the contract under testing/synctest). A
// bubble's clock starts at midnight UTC, 1 January 2000.
func TestConformanceFakeTimeByDefault(t *testing.T) {
	var calls, bubbled atomic.Int32
	locktest.Run(t, func(t *testing.T) ctxlock.Backend {
		calls.Add(1)
		if time.Now().Year() == 2000 {
			bubbled.Add(1)
		}
		return newBackend(t)
	})
	// One call outside a bubble: Run's probe.
	if c, b := calls.Load(), bubbled.Load(); c < 2 || b != c-1 {
		t.Fatalf("%d of %d factory calls in a bubble; want all but the probe", b, c)
	}
}
