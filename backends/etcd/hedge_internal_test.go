package etcd

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
)

var errStuck = ctxlock.Unavailable(errors.New("stuck"))

// A copy stuck on an unanswering member is hedged after the delay; the
// hedge's answer wins, and the stuck copy is cancelled and waited for.
func TestHedgedAnswersPastAStuckCopy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls, firstCancelled atomic.Int32
		errs := make([]error, 2)
		start := time.Now()
		hedged(t.Context(), 100*time.Millisecond, 3, errs, func(ctx context.Context, out []error, hedge bool, sent func()) {
			sent()
			if n := calls.Add(1); n == 1 {
				if hedge {
					t.Error("the first copy is marked a hedge")
				}
				<-ctx.Done()
				firstCancelled.Store(1)
				fill(out, errStuck)
				return
			}
			if !hedge {
				t.Error("a hedge is not marked as one")
			}
			out[1] = ctxlock.ErrLost
		})
		if got := time.Since(start); got != 100*time.Millisecond {
			t.Errorf("answered after %v, want the hedge delay (100ms)", got)
		}
		if errs[0] != nil || !errors.Is(errs[1], ctxlock.ErrLost) {
			t.Errorf("errs = %v, want the hedge's [nil, ErrLost]", errs)
		}
		if calls.Load() != 2 || firstCancelled.Load() != 1 {
			t.Errorf("%d calls, first cancelled: %v; want 2 calls, the first cancelled before hedged returned", calls.Load(), firstCancelled.Load() == 1)
		}
	})
}

// A copy that fails transiently starts the next at once, without waiting
// for the delay; when every copy fails, the last one's errors are the
// result.
func TestHedgedRetriesFailuresAtOnceUpToCopies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		errs := make([]error, 1)
		start := time.Now()
		hedged(t.Context(), time.Second, 3, errs, func(ctx context.Context, out []error, hedge bool, sent func()) {
			sent()
			n := calls.Add(1)
			time.Sleep(10 * time.Millisecond)
			out[0] = ctxlock.Unavailable(errors.New([]string{"", "one", "two", "three"}[n]))
		})
		if calls.Load() != 3 {
			t.Errorf("%d calls, want 3", calls.Load())
		}
		if got := time.Since(start); got != 30*time.Millisecond {
			t.Errorf("took %v, want 3 failures back to back (30ms)", got)
		}
		if errs[0] == nil || errs[0].Error() != "ctxlock: backend unavailable: three" {
			t.Errorf("errs = %v, want the last copy's", errs)
		}
	})
}

// An answer before the delay sends no hedge, and the attempt's deadline
// stops hedging: copies cut off by it report it.
func TestHedgedSendsNoHedgeWhenAnsweredOrOutOfTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		errs := make([]error, 1)
		hedged(t.Context(), 100*time.Millisecond, 3, errs, func(ctx context.Context, out []error, hedge bool, sent func()) {
			sent()
			calls.Add(1)
			time.Sleep(99 * time.Millisecond)
		})
		if calls.Load() != 1 || errs[0] != nil {
			t.Errorf("%d calls, errs %v; want 1 call answered", calls.Load(), errs)
		}

		calls.Store(0)
		ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
		defer cancel()
		hedged(ctx, 100*time.Millisecond, 3, errs, func(ctx context.Context, out []error, hedge bool, sent func()) {
			sent()
			calls.Add(1)
			<-ctx.Done()
			out[0] = classify("keep-alive", ctx.Err())
		})
		if calls.Load() != 2 {
			t.Errorf("%d calls, want 2 (one hedge before the deadline)", calls.Load())
		}
		if !errors.Is(errs[0], ctxlock.ErrUnavailable) || !errors.Is(errs[0], context.DeadlineExceeded) {
			t.Errorf("errs = %v, want the deadline, transient", errs)
		}
	})
}

// Results are kept per index: a copy's known result (here a loss) is not
// thrown away because another of its results was transient, and the hedge
// fills in only what is still unknown.
func TestHedgedKeepsKnownResultsPerIndex(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		errs := make([]error, 3)
		hedged(t.Context(), time.Second, 3, errs, func(ctx context.Context, out []error, hedge bool, sent func()) {
			sent()
			switch calls.Add(1) {
			case 1:
				out[0], out[1], out[2] = ctxlock.ErrLost, errStuck, errStuck
			case 2:
				out[0], out[1], out[2] = errStuck, nil, errStuck
			default:
				out[0], out[1], out[2] = nil, errStuck, errStuck
			}
		})
		if calls.Load() != 3 {
			t.Errorf("%d calls, want 3 (index 2 stayed unknown)", calls.Load())
		}
		if !errors.Is(errs[0], ctxlock.ErrLost) || errs[1] != nil || !errors.Is(errs[2], ctxlock.ErrUnavailable) {
			t.Errorf("errs = %v, want [ErrLost (copy 1), nil (copy 2), transient]", errs)
		}
	})
}

// The delay counts from when a copy's request left (sent), not from its
// start: a copy slow to open its stream is not hedged meanwhile.
func TestHedgedDelayCountsFromSent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		var hedgedAt time.Duration
		start := time.Now()
		errs := make([]error, 1)
		hedged(t.Context(), 100*time.Millisecond, 3, errs, func(ctx context.Context, out []error, hedge bool, sent func()) {
			if calls.Add(1) == 1 {
				time.Sleep(200 * time.Millisecond) // opening the stream
				sent()
				<-ctx.Done()
				out[0] = errStuck
				return
			}
			hedgedAt = time.Since(start)
			sent()
		})
		if hedgedAt != 300*time.Millisecond || calls.Load() != 2 || errs[0] != nil {
			t.Errorf("hedge at %v, %d calls, errs %v; want the hedge 100ms after the first copy's request left (300ms), 2 calls, answered", hedgedAt, calls.Load(), errs)
		}
	})
}

// The hedge delay is a twelfth of the TTL until reads show a longer round
// trip, then twice the smoothed round trip (weight 1/8 per read), capped
// at an eighth of the TTL, never under minHedgeDelay.
func TestHedgeDelayBounds(t *testing.T) {
	const ttl = 12 * time.Second
	b := &Backend{}
	if got := b.hedgeDelay(ttl); got != ttl/12 {
		t.Errorf("hedge delay with no read yet = %v, want ttl/12 = %v", got, ttl/12)
	}
	b.observeReadRTT(100 * time.Millisecond) // the first read sets it
	if got := time.Duration(b.readRTT.Load()); got != 100*time.Millisecond {
		t.Errorf("smoothed round trip after one 100ms read = %v, want 100ms", got)
	}
	if got := b.hedgeDelay(ttl); got != ttl/12 {
		t.Errorf("hedge delay with 100ms reads = %v, want ttl/12 = %v", got, ttl/12)
	}
	b.observeReadRTT(5 * time.Second)
	smoothed := 100*time.Millisecond + (5*time.Second-100*time.Millisecond)/8
	if got := time.Duration(b.readRTT.Load()); got != smoothed {
		t.Errorf("smoothed round trip = %v, want %v", got, smoothed)
	}
	if got := b.hedgeDelay(ttl); got != 2*smoothed {
		t.Errorf("hedge delay = %v, want twice the smoothed round trip, %v", got, 2*smoothed)
	}
	b.observeReadRTT(5 * time.Second)
	b.observeReadRTT(5 * time.Second)
	if got := b.hedgeDelay(ttl); got != ttl/8 {
		t.Errorf("hedge delay after slow reads = %v, want the cap ttl/8 = %v", got, ttl/8)
	}
	if got := (&Backend{}).hedgeDelay(100 * time.Millisecond); got != minHedgeDelay {
		t.Errorf("hedge delay for a 100ms TTL = %v, want minHedgeDelay %v", got, minHedgeDelay)
	}
}
