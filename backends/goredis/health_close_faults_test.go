package goredis_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// frozenManager returns a Manager over a server that answers Health once,
// then is frozen (SIGSTOP) until the test ends. The client's ReadTimeout is
// rt (-1: go-redis waits for ever), so only the caller's ctx bounds a call.
func frozenManager(t *testing.T, rt time.Duration) (*ctxlock.Manager, *redistest.Server) {
	t.Helper()
	s := redistest.StartServer(t)
	b := newBackend(t, s.Client(t, func(o *redis.Options) { o.ReadTimeout = rt }))
	m := ctxlock.NewManager(b)
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	if conds, err := m.Health(context.Background()); err != nil || len(conds) != 0 {
		t.Fatalf("Health of a healthy server: %q, %v; want none and nil", conds, err)
	}
	return m, s
}

// healthWithin runs m.Health(ctx) and fails t unless it returns within
// limit; a call still blocked then is let go by resuming the server.
func healthWithin(t *testing.T, m *ctxlock.Manager, s *redistest.Server, ctx context.Context, limit time.Duration) ([]string, time.Duration, error) {
	t.Helper()
	type result struct {
		conds []string
		err   error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		conds, err := m.Health(ctx)
		done <- result{conds, err}
	}()
	select {
	case r := <-done:
		return r.conds, time.Since(start), r.err
	case <-time.After(limit):
		t.Errorf("Health still blocked %v after it started, the server frozen", limit)
		s.Cont()
		r := <-done
		return r.conds, time.Since(start), r.err
	}
}

// Health with a ctx that is cancelled (no deadline, as an HTTP handler's
// request context) returns when ctx is cancelled, though the server is
// frozen: go-redis honours a ctx's deadline (ContextTimeoutEnabled), never
// its cancellation, and with ReadTimeout -1 the PING waited for ever.
func TestHealthFrozenServerHonoursCancellation(t *testing.T) {
	m, s := frozenManager(t, -1)
	s.Stop()
	defer s.Cont()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	conds, took, err := healthWithin(t, m, s, ctx, 2*time.Second)
	if err == nil || !errors.Is(err, context.Canceled) {
		t.Errorf("Health cancelled on a frozen server: %q, %v; want an error matching context.Canceled", conds, err)
	}
	if took > time.Second {
		t.Errorf("Health took %v; want it to return when ctx was cancelled (100ms)", took)
	}
}

// Health with a ctx deadline on a frozen server returns by the deadline
// with ErrUnavailable.
func TestHealthFrozenServerHonoursDeadline(t *testing.T) {
	m, s := frozenManager(t, -1)
	s.Stop()
	defer s.Cont()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	conds, took, err := healthWithin(t, m, s, ctx, 2*time.Second)
	if err == nil || len(conds) == 0 {
		t.Errorf("Health on a frozen server: %q, %v; want a condition and an error", conds, err)
	}
	if took > time.Second {
		t.Errorf("Health took %v; want it to return by ctx's deadline (200ms)", took)
	}
}

// Health on a closed Manager says so at once, with an error matching
// ErrClosed, whatever the backend is doing: it used to PING the (frozen)
// server first, until ctx's deadline, and return the backend's error.
func TestHealthClosedManagerFrozenServer(t *testing.T) {
	m, s := frozenManager(t, 3*time.Second)
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	defer s.Cont()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conds, took, err := healthWithin(t, m, s, ctx, 5*time.Second)
	if !errors.Is(err, ctxlock.ErrClosed) {
		t.Errorf("Health on a closed Manager: %q, %v; want an error matching ErrClosed", conds, err)
	}
	if took > time.Second { // a PING would wait for the 3s ReadTimeout
		t.Errorf("Health on a closed Manager took %v; want it at once", took)
	}
}

// Close with the server frozen, holds held and a release pending returns
// by its ctx's deadline, saying what was left, even though the scheduler's
// workers are blocked in backend calls (their own bound is 5s, and the
// client's ReadTimeout longer); every expiry channel is closed; a second
// Close returns nil. Once the server is back, the backend calls still
// running end, and the keys are free at the latest after their TTL.
func TestCloseFrozenServerReturnsByDeadline(t *testing.T) {
	m, s := frozenManager(t, time.Minute)
	const ttl = 1500 * time.Millisecond
	keys := []string{"closefrozen/a", "closefrozen/b", "closefrozen/c"}
	var locks []ctxlock.Lock
	var expiries []<-chan struct{}
	for _, k := range keys {
		l := m.NewLock(k, ctxlock.WithTTL(ttl))
		exp, err := l.Lock(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		locks = append(locks, l)
		expiries = append(expiries, exp)
	}
	s.Stop()
	defer s.Cont()
	frozenAt := time.Now()
	if err := locks[0].Unlock(); err != nil { // its release is sent, and hangs
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	closed := make(chan error, 1)
	start := time.Now()
	go func() { closed <- m.Close(ctx) }()
	var err error
	select {
	case err = <-closed:
	case <-time.After(4 * time.Second):
		t.Errorf("Close still blocked 4s after it started, its ctx's deadline 300ms")
		s.Cont()
		err = <-closed
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Close took %v; want it to return by its ctx's deadline (300ms)", took)
	}
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "abandoned") {
		t.Errorf("Close with releases left: %v; want an error saying what was abandoned, matching DeadlineExceeded", err)
	}
	for i, exp := range expiries {
		select {
		case <-exp:
		default:
			t.Errorf("expiry channel of %s still open after Close", keys[i])
		}
	}
	for i, l := range locks[1:] {
		if !errors.Is(l.Err(), ctxlock.ErrClosed) {
			t.Errorf("%s: Err() = %v after Close; want ErrClosed", keys[i+1], l.Err())
		}
	}
	if err := m.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := m.Health(context.Background()); !errors.Is(err, ctxlock.ErrClosed) {
		t.Errorf("Health after Close: %v; want ErrClosed", err)
	}
	s.Cont()
	// The keys whose release could not be confirmed are free by their TTL.
	m2 := ctxlock.NewManager(newBackend(t, s.Client(t)))
	defer m2.Close(context.Background())
	for _, k := range keys {
		lctx, cancel := context.WithDeadline(context.Background(), frozenAt.Add(ttl+time.Second))
		_, err := m2.NewLock(k, ctxlock.WithTTL(ttl)).Lock(lctx)
		cancel()
		if err != nil {
			t.Errorf("%s not acquirable by its TTL after the server came back: %v", k, err)
		}
	}
}
