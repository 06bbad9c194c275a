package ctxlock_test

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// A TryLock that finds the key held by another Lock value of the Manager,
// and whose tracer panics as it records that (the contended event) or as
// it ends the call's span, must still free its Lock value: else every
// later TryLock of the value reports the key held, and every Lock blocks,
// for ever, even once the key is free.
func TestPanicInFailedTryLockFreesValue(t *testing.T) {
	for _, c := range []struct {
		name  string
		onEnd bool
	}{{"contended event", false}, {"span end", true}} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := ctxlock.NewManager(memory.New())
				defer closeManager(t, m)
				other := m.NewLock("k")
				if _, err := other.Lock(t.Context()); err != nil {
					t.Fatal(err)
				}
				l := m.NewLock("k", ctxlock.WithTracer(panickyTracer{once: new(atomic.Bool), onEnd: c.onEnd}))
				if p := recovered(func() { _, _, _ = l.TryLock(t.Context()) }); p == nil {
					t.Fatal("the tracer did not panic (the test's premise)")
				}
				if err := other.Unlock(); err != nil {
					t.Fatal(err)
				}
				valueIsFree(t, l)
			})
		})
	}
}

// A TryLock whose attempt the backend answered free while another Lock
// value of the Manager took the key records the call contended once it
// has failed; a tracer panicking there must not leave the TryLock's value
// busy.
func TestPanicInTryLockRefusedForLocalHoldFreesValue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &deleteNotifying{Backend: memory.New()}
		m := ctxlock.NewManager(b)
		defer closeManager(t, m)
		gate := make(chan struct{})
		inHook := make(chan struct{})
		var first atomic.Bool
		b.acquired = func(lease ctxlock.Lease) {
			if first.CompareAndSwap(false, true) {
				b.Evict(lease.Key)
				close(inHook)
				<-gate
			}
		}
		l := m.NewLock("k", ctxlock.WithTTL(time.Hour), ctxlock.WithTracer(panickyTracer{once: new(atomic.Bool)}))
		tried := make(chan any, 1)
		go func() { tried <- recovered(func() { _, _, _ = l.TryLock(context.Background()) }) }()
		<-inHook
		synctest.Wait()
		other := m.NewLock("k", ctxlock.WithTTL(time.Hour))
		if _, err := other.Lock(t.Context()); err != nil {
			t.Fatal(err)
		}
		close(gate)
		if p := <-tried; p == nil {
			t.Fatal("no panic: the TryLock was not refused for the local hold (the test's premise)")
		}
		if err := other.Unlock(); err != nil {
			t.Fatal(err)
		}
		valueIsFree(t, l)
	})
}

// valueIsFree checks that l, whose key is free once its release settles,
// takes it with a TryLock and then with a Lock.
func valueIsFree(t *testing.T, l ctxlock.Lock) {
	t.Helper()
	synctest.Wait()
	ok, _, err := l.TryLock(t.Context())
	if err != nil || !ok {
		t.Fatalf("TryLock of the free key after the panic = %v, %v; want true", ok, err)
	}
	_ = l.Unlock()
	locksFreeKey(t, l, "Lock of the free key after the panic")
}
