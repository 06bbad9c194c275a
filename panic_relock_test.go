package ctxlock_test

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
)

// A meter that panics in the Lock call that re-takes its key with a
// Relock (as the release's settling is recorded) must not leave the
// Relock's new lease on the server with nobody holding or releasing it: a
// call whose instrumentation panics gives back what it took, also a hold
// made just before the panic, which the caller never gets. Else the key is
// blocked for a whole TTL for everyone, this Manager included.
func TestPanicAfterRelockGivesLeaseBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newRoundTripBackend(true) // releases wait for the round trip: the next Lock takes them
		armed := new(atomic.Bool)
		m := ctxlock.NewManager(b, ctxlock.WithMeterProvider(panickyMeterProvider{armed: armed, decrement: true}))
		defer m.Close(context.Background())
		l := m.NewLock("k", ctxlock.WithTTL(time.Hour))
		if _, err := l.Lock(t.Context()); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // the scheduler sleeps: the release waits for the round trip
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
		armed.Store(true)
		p := recovered(func() { _, _ = l.Lock(t.Context()) })
		if p == nil {
			t.Fatal("the meter did not panic in Lock (the test's premise)")
		}
		_, _, _, relocks := b.counts()
		b.answer()
		synctest.Wait()
		owner, _, token, remaining, held := b.Holder("k")
		if held {
			t.Errorf("after the Lock call panicked (%v; %d relocks), key still held on the server by %q (token %d) for %v, with no local hold (Token %d)",
				p, relocks, owner, token, remaining, l.Token())
		}
		// Anyone else waits for that TTL.
		m2 := ctxlock.NewManager(b)
		defer m2.Close(context.Background())
		ok, _, err := m2.NewLock("k", ctxlock.WithTTL(time.Hour)).TryLock(t.Context())
		if err != nil || !ok {
			t.Errorf("TryLock from another Manager = %v, %v: the leaked lease blocks the key", ok, err)
		}
	})
}
