package redlock_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/locktest"
	"github.com/ctxlock/ctxlock/backends/redlock"
)

const faultTTL = time.Second

// lockOpts are the options of the fault tests' locks: a short TTL, and a
// validity allowance that absorbs a real scheduler's lateness.
func lockOpts() []ctxlock.LockOption {
	return []ctxlock.LockOption{ctxlock.WithTTL(faultTTL), ctxlock.WithDriftFactor(0.1)}
}

func newManager(t *testing.T, b ctxlock.Backend) *ctxlock.Manager {
	t.Helper()
	m := ctxlock.NewManager(b)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*faultTTL)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Errorf("Manager.Close: %v", err)
		}
	})
	return m
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestMinorityAndMajorityLoss: with 2 of 5 nodes dead locks still work and
// holds survive refreshes; with 3 dead a blocking Lock waits and ends with
// its context's error and the quorum error, held locks' expiry channels
// close within their validity; after a restart locks work again.
func TestMinorityAndMajorityLoss(t *testing.T) {
	c := startNodes(t, 5)
	b := newBackend(t, c.clients)
	m := newManager(t, b)
	other := newManager(t, b)

	held := m.NewLock(uniqueKey("held"), lockOpts()...)
	exp, err := held.Lock(ctxFor(t, 10*faultTTL))
	if err != nil {
		t.Fatal(err)
	}

	// A minority of nodes dies.
	c.servers[0].Kill()
	c.servers[1].Kill()
	l := m.NewLock(uniqueKey("fresh"), lockOpts()...)
	if _, err := l.Lock(ctxFor(t, 10*faultTTL)); err != nil {
		t.Fatalf("Lock with 2 of 5 nodes down: %v", err)
	}
	if ok, _, err := other.NewLock(l.Key(), lockOpts()...).TryLock(ctxFor(t, faultTTL)); ok || err != nil {
		t.Fatalf("TryLock of a held key with 2 of 5 down: (%v, %v); want held", ok, err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatalf("Unlock with 2 of 5 nodes down: %v", err)
	}
	// The older hold keeps being refreshed for well over a TTL.
	select {
	case <-exp:
		t.Fatalf("hold ended with 2 of 5 nodes down: %v", held.Err())
	case <-time.After(2 * faultTTL):
	}
	if ok, _, err := other.NewLock(held.Key(), lockOpts()...).TryLock(ctxFor(t, faultTTL)); ok || err != nil {
		t.Fatalf("TryLock of the refreshed hold's key: (%v, %v); want held", ok, err)
	}

	// A majority is gone.
	killed := time.Now()
	c.servers[2].Kill()
	select {
	case <-exp:
	case <-time.After(2 * faultTTL):
		t.Fatal("hold did not end after the majority of nodes died")
	}
	if el := time.Since(killed); el >= faultTTL {
		t.Errorf("expiry channel closed %v after the majority died; want before the TTL %v", el, faultTTL)
	}
	if err := held.Err(); !errors.Is(err, ctxlock.ErrExpired) && !errors.Is(err, ctxlock.ErrLost) {
		t.Errorf("Err of the hold: %v; want ErrExpired or ErrLost", err)
	}
	t.Logf("hold ended %v after the majority died: %v", time.Since(killed), held.Err())

	waiting := m.NewLock(uniqueKey("waiting"), lockOpts()...)
	start := time.Now()
	_, err = waiting.Lock(ctxFor(t, faultTTL))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock with 3 of 5 down: %v; want DeadlineExceeded", err)
	}
	if time.Since(start) < faultTTL/2 {
		t.Errorf("Lock gave up after %v; want it to keep waiting until its context ends", time.Since(start))
	}
	var qe *redlock.QuorumError
	if !errors.As(err, &qe) || qe.Count(redlock.NodeUnreachable) < 3 || !errors.Is(qe, ctxlock.ErrUnavailable) {
		t.Fatalf("Lock error %v: want a quorum error with 3 unreachable nodes joined in", err)
	}
	t.Logf("Lock error with 3 of 5 down: %v", err)
	if _, err := m.Health(ctxFor(t, faultTTL)); err == nil {
		t.Error("Health with 3 of 5 down: nil; want an error")
	}

	// Recovery.
	for _, s := range c.servers[:3] {
		s.Restart()
	}
	again := other.NewLock(held.Key(), lockOpts()...)
	if _, err := again.Lock(ctxFor(t, 10*faultTTL)); err != nil {
		t.Fatalf("Lock after the nodes restarted: %v", err)
	}
	if err := again.Unlock(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Health(ctxFor(t, faultTTL)); err != nil {
		t.Errorf("Health after restart: %v", err)
	}
}

// TestFrozenNodeNoTwoHolders: one node frozen (SIGSTOP) for longer than the
// TTL while three Managers contend for one key: mutual exclusion holds, and
// fencing tokens increase.
func TestFrozenNodeNoTwoHolders(t *testing.T) {
	c := startNodes(t, 5)
	frozen := c.servers[2]
	t.Cleanup(frozen.Cont) // never leave it frozen (runs before the server's own cleanup)
	b := newBackend(t, c.clients)
	key := uniqueKey("contended")

	var chk locktest.Checker
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	progress := make(chan struct{}, 1024)
	var wg sync.WaitGroup
	for mi := range 3 {
		m := newManager(t, b)
		for gi := range 2 {
			name := fmt.Sprintf("manager %d goroutine %d", mi, gi)
			l := m.NewLock(key, lockOpts()...)
			wg.Go(func() {
				for {
					exp, err := l.Lock(ctx)
					if err != nil {
						if ctx.Err() == nil {
							t.Errorf("%s: Lock: %v", name, err)
						}
						return
					}
					h := locktest.Hold{Key: key, Owner: name, Token: l.Token(), Start: time.Now()}
					select { // a moment of work, cut short if the hold ends
					case <-exp:
					case <-time.After(5 * time.Millisecond):
					}
					h.End = time.Now()
					if err := l.Unlock(); err != nil && !errors.Is(err, ctxlock.ErrNotHeld) {
						t.Errorf("%s: Unlock: %v", name, err)
					}
					chk.Record(h)
					select {
					case progress <- struct{}{}:
					default:
					}
				}
			})
		}
	}
	waitHolds := func(n int, what string) {
		t.Helper()
		timeout := time.After(20 * faultTTL)
		for range n {
			select {
			case <-progress:
			case <-timeout:
				t.Fatalf("fewer than %d holds %s", n, what)
			}
		}
	}
	waitHolds(5, "before the freeze")
	frozen.Stop()
	frozeAt := time.Now()
	// Contention continues for longer than a TTL with the node frozen.
	freeze := time.After(faultTTL * 3 / 2)
	for done := false; !done; {
		select {
		case <-progress:
		case <-freeze:
			done = true
		}
	}
	frozen.Cont()
	thawedAt := time.Now()
	waitHolds(5, "after the thaw")
	stop()
	wg.Wait()

	during := 0
	for _, h := range chk.Holds() {
		if h.Start.After(frozeAt) && h.End.Before(thawedAt) {
			during++
		}
	}
	if during == 0 {
		t.Error("no hold while the node was frozen")
	}
	n := chk.Check(t)
	t.Logf("%d holds, %d while node %s was frozen for %v", n, during, frozen.Addr(), thawedAt.Sub(frozeAt))
}

// Leave returns when its context ends even when no quorum can answer (two of
// three nodes frozen): a Manager's Close cuts the leaves of Lock calls that
// gave up short so. The nodes' calls go on in the background, bounded.
func TestLeaveReturnsWhenContextEnds(t *testing.T) {
	c := startNodes(t, 3)
	b := newBackend(t, c.clients)
	c.servers[1].Stop()
	c.servers[2].Stop()
	defer c.servers[1].Cont()
	defer c.servers[2].Cont()
	ctx, cancel := context.WithCancel(context.Background()) // no deadline: the nodes get the 1s release timeout
	defer cancel()
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	err := b.Leave(ctx, "k", "waiter")
	// A Leave that ignored the cancellation would wait for the nodes' 1s
	// release timeout; the rest is slack for a loaded machine.
	if el := time.Since(start); !errors.Is(err, context.Canceled) || el > 900*time.Millisecond {
		t.Fatalf("Leave with 2 of 3 nodes frozen, cancelled after 100ms: %v after %v; want Canceled at about 100ms", err, el)
	}
}
