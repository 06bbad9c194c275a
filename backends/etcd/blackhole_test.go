package etcd_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/locktest"
	"github.com/ctxlock/ctxlock/internal/etcdtest"
	"github.com/ctxlock/ctxlock/internal/faultproxy"
)

// callBound is how long a call with a 2s context (or none) may take during
// the partition: its context's deadline and some slack.
const callBound = 3 * time.Second

// bounded runs f and fails t when it takes longer than d.
func bounded(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		f()
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-done:
		t.Logf("%s returned after %v", what, time.Since(start).Round(time.Millisecond))
	case <-timer.C:
		t.Errorf("%s still running after %v", what, d)
		<-done // so that nothing outlives the test (goleak)
	}
}

// Liveness through a network partition: the link of the holder's Manager
// (its Backend's client dials a fault proxy) is blackholed for longer than
// the TTL while the server stays up. Every call through the dead link
// returns within its bound; the holder's expiry channel closes
// (ErrExpired) before a Manager connected directly takes the key; once the
// link heals, the first Manager locks the key again with a larger token,
// and its Backend's watch delivers releases again.
func TestBlackholeLiveness(t *testing.T) {
	s := etcdtest.Start(t)
	proxy := faultproxy.Start(t, s.Addr())
	client1 := newClient(t, proxy.Addr())
	b1 := newBackend(t, client1)
	b3 := newBackend(t, client1) // closed during the partition
	b2 := newBackend(t, newClient(t, s.Addr()))
	const ttl = time.Second
	opts := ctxlock.WithDefaultLockOptions(ctxlock.WithTTL(ttl), ctxlock.WithAcquireTimeout(2*time.Second))
	m1 := newManager(t, b1, opts)
	m2 := newManager(t, b2, opts)
	// Both watches are up before the fault.
	for _, b := range []interface {
		Watch(string) (<-chan struct{}, func())
	}{b1, b2, b3} {
		_, stop := b.Watch("warm-up")
		defer stop()
	}
	pollUntil(t, 10*time.Second, "the watches", func() bool { return watchInForce(t, b1) && watchInForce(t, b2) && watchInForce(t, b3) })
	if st := proxy.Stats(); st.Open < 1 {
		t.Fatalf("want the holder's client connected through the proxy; %+v", st)
	}

	var checker locktest.Checker
	holder := m1.NewLock("k")
	expired, err := holder.Lock(testCtx(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	holdStart, holdToken := time.Now(), holder.Token()
	expiredAt := make(chan time.Time, 1) // when the expiry channel closed
	go func() {
		<-expired
		expiredAt <- time.Now()
	}()
	other := m1.NewLock("other") // unlocked during the partition
	if _, err := other.Lock(testCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}

	type result struct {
		err           error
		at            time.Time
		holderExpired bool
	}
	done := make(chan result, 1)
	waiter := m2.NewLock("k")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		_, err := waiter.Lock(ctx)
		r := result{err: err, at: time.Now()}
		select {
		case <-expired:
			r.holderExpired = true
		default:
		}
		done <- r
	}()

	proxy.Blackhole()
	partitioned := time.Now()
	// Calls through the dead link return within their bounds.
	bounded(t, callBound, "Unlock during the partition", func() {
		_ = other.Unlock()
	})
	bounded(t, callBound, "TryLock (2s context) during the partition", func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if ok, _, err := m1.NewLock("try").TryLock(ctx); ok || err == nil {
			t.Errorf("TryLock through a dead link: %v, %v; want an error", ok, err)
		}
	})
	bounded(t, callBound, "Health (2s context) during the partition", func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := b1.Health(ctx); err == nil {
			t.Error("Health through a dead link reports no error")
		}
	})
	bounded(t, callBound, "Close of a watching Backend during the partition", func() {
		if err := b3.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	// The Backend's own calls, with 1s contexts.
	l := ctxlock.Lease{Key: "direct", Owner: "direct-owner"}
	bounded(t, callBound, "Backend.Acquire (1s context) during the partition", func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := b1.Acquire(ctx, ctxlock.AcquireRequest{Key: l.Key, Owner: l.Owner, TTL: ttl}); !errors.Is(err, ctxlock.ErrUnavailable) {
			t.Errorf("Acquire through a dead link: %v; want ErrUnavailable", err)
		}
	})
	bounded(t, callBound, "Backend.Extend (1s context) during the partition", func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if errs := b1.Extend(ctx, []ctxlock.Lease{l}, ttl); !errors.Is(errs[0], ctxlock.ErrUnavailable) {
			t.Errorf("Extend through a dead link: %v; want ErrUnavailable", errs[0])
		}
	})
	bounded(t, callBound, "Backend.Release (1s context) during the partition", func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if errs := b1.Release(ctx, []ctxlock.Lease{l}); !errors.Is(errs[0], ctxlock.ErrUnavailable) {
			t.Errorf("Release through a dead link: %v; want ErrUnavailable", errs[0])
		}
	})

	var expiredTime time.Time
	select {
	case expiredTime = <-expiredAt:
	case <-time.After(10 * ttl):
		t.Fatal("the holder's expiry channel is still open 10 TTLs into the partition")
	}
	t.Logf("the holder expired %v into the partition", expiredTime.Sub(partitioned).Round(time.Millisecond))
	checker.Record(locktest.Hold{Key: "k", Owner: "holder (m1, partitioned)", Token: holdToken, Start: holdStart, End: expiredTime})
	if !errors.Is(holder.Err(), ctxlock.ErrExpired) {
		t.Errorf("holder.Err() = %v; want ErrExpired", holder.Err())
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("waiter (m2, direct): %v", r.err)
	}
	if !r.holderExpired {
		t.Fatal("the waiter acquired the key while the holder's expiry channel was still open")
	}
	t.Logf("the waiter got the key %v after the holder's expiry", r.at.Sub(expiredTime).Round(time.Millisecond))
	checker.Record(locktest.Hold{Key: "k", Owner: "waiter (m2, direct)", Token: waiter.Token(), Start: r.at, End: time.Now()})
	if err := waiter.Unlock(); err != nil {
		t.Fatal(err)
	}

	// Heal: the first Manager locks again, with a larger token.
	proxy.Pass()
	healed := time.Now()
	if _, err := holder.Lock(testCtx(t, 30*time.Second)); err != nil {
		t.Fatalf("Lock through the healed link: %v", err)
	}
	t.Logf("locked again %v after the heal", time.Since(healed).Round(time.Millisecond))
	start := time.Now()
	checker.Record(locktest.Hold{Key: "k", Owner: "holder again (m1, healed)", Token: holder.Token(), Start: start, End: time.Now()})
	if err := holder.Unlock(); err != nil {
		t.Fatal(err)
	}
	if n := checker.Check(t); n != 3 {
		t.Fatalf("checked %d holds, want 3", n)
	}

	// The holder's watch delivers a release made by the other Manager
	// after the heal (once it is in force again, and its wake-up on
	// reconnecting is drained).
	ch, stop := b1.Watch("after-heal")
	defer stop()
	l2 := m2.NewLock("after-heal")
	if _, err := l2.Lock(testCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 30*time.Second, "the holder's watch after the heal", func() bool { return watchInForce(t, b1) })
	drain(ch)
	if err := l2.Unlock(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("the holder's Backend's watch did not deliver a release made after the heal")
	}
}

// drain empties a watch channel.
func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}
