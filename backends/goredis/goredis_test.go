package goredis_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

func TestMain(m *testing.M) {
	redis.SetLogger(quiet{}) // faults are deliberate here: no dial-failure noise
	goleak.VerifyTestMain(m)
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

const waitLong = 10 * time.Second

func newBackend(t testing.TB, c redis.UniversalClient, opts ...goredis.Option) *goredis.Backend {
	t.Helper()
	b := goredis.New(c, opts...)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func owner() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func acquire(t testing.TB, b ctxlock.Backend, key string, ttl time.Duration) ctxlock.Lease {
	t.Helper()
	l, err := b.Acquire(context.Background(), ctxlock.AcquireRequest{Key: key, Owner: owner(), TTL: ttl, Timeout: time.Second})
	if err != nil {
		t.Fatalf("Acquire(%q): %v", key, err)
	}
	return l
}

func received(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitLong):
		t.Fatalf("no wake-up after %s within %v", what, waitLong)
	}
}

func TestBackendName(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	b := goredis.New(c)
	defer b.Close()
	if got := b.BackendName(); got != "redis" {
		t.Fatalf("BackendName() = %q", got)
	}
}

func TestAcquireHeld(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	b := newBackend(t, c)
	ctx := context.Background()

	l := acquire(t, b, "k", 10*time.Second)
	if l.Key != "k" || l.Token == 0 || l.Owner == "" {
		t.Fatalf("lease = %+v", l)
	}
	_, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: "k", Owner: owner(), TTL: time.Second, Timeout: time.Second})
	var held *ctxlock.HeldError
	if !errors.As(err, &held) || !errors.Is(err, ctxlock.ErrHeld) {
		t.Fatalf("second Acquire: %v, want *HeldError", err)
	}
	if held.Remaining <= 8*time.Second || held.Remaining > 10*time.Second {
		t.Fatalf("Remaining = %v, want about 10s", held.Remaining)
	}
	if errors.Is(err, ctxlock.ErrUnavailable) {
		t.Fatal("held must not be transient")
	}
	// The layout is documented: the holder is visible to operators.
	lk, fk, _ := b.Keys("k")
	if v, _ := c.Get(ctx, lk).Result(); v != l.Owner {
		t.Fatalf("GET %s = %q, want owner %q", lk, v, l.Owner)
	}
	if n, _ := c.Get(ctx, fk).Uint64(); n != l.Token {
		t.Fatalf("GET %s = %d, want token %d", fk, n, l.Token)
	}
}

func TestMetadataAndSameOwnerRetry(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	b := newBackend(t, c)
	ctx := context.Background()
	req := ctxlock.AcquireRequest{Key: "m", Owner: owner(), TTL: 5 * time.Second, Timeout: time.Second, Metadata: "host-a pid 42"}
	l1, err := b.Acquire(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	lk, _, _ := b.Keys("m")
	if v, _ := c.Get(ctx, lk).Result(); v != req.Owner+"\x00host-a pid 42" {
		t.Fatalf("stored value %q", v)
	}
	// A retry of the same hold (ambiguous first attempt) gets the same lease.
	l2, err := b.Acquire(ctx, req)
	if err != nil || l2.Token != l1.Token {
		t.Fatalf("retry: %+v, %v; want token %d", l2, err, l1.Token)
	}
	// Owner checks still work with metadata stored.
	if errs := b.Extend(ctx, []ctxlock.Lease{l1}, 5*time.Second); errs != nil && errs[0] != nil {
		t.Fatalf("Extend: %v", errs[0])
	}
	// A prefix of the owner is not the owner.
	short := l1
	short.Owner = l1.Owner[:4]
	if errs := b.Extend(ctx, []ctxlock.Lease{short}, 5*time.Second); errs == nil || !errors.Is(errs[0], ctxlock.ErrLost) {
		t.Fatalf("Extend with owner prefix: %v, want ErrLost", errs)
	}
	if errs := b.Release(ctx, []ctxlock.Lease{l1}); errors.Join(errs...) != nil {
		t.Fatalf("Release: %v", errs)
	}
	if n, _ := c.Exists(ctx, lk).Result(); n != 0 {
		t.Fatal("lock key still there after release")
	}
}

func TestTokensIncrease(t *testing.T) {
	s := redistest.StartServer(t)
	b := newBackend(t, s.Client(t))
	b2 := newBackend(t, s.Client(t)) // a second process
	var last uint64
	for i := range 20 {
		bb := b
		if i%2 == 1 {
			bb = b2
		}
		l := acquire(t, bb, "tok", time.Second)
		if l.Token <= last {
			t.Fatalf("token %d after %d", l.Token, last)
		}
		last = l.Token
		if errs := bb.Release(context.Background(), []ctxlock.Lease{l}); errors.Join(errs...) != nil {
			t.Fatal(errs)
		}
	}
}

func TestExtendOwnerChecked(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	b := newBackend(t, c)
	ctx := context.Background()
	l := acquire(t, b, "ext", time.Second)
	wrong := l
	wrong.Owner = owner()
	errs := b.Extend(ctx, []ctxlock.Lease{l, wrong}, 20*time.Second)
	if len(errs) != 2 || errs[0] != nil || !errors.Is(errs[1], ctxlock.ErrLost) {
		t.Fatalf("Extend = %v, want [nil ErrLost]", errs)
	}
	if errors.Is(errs[1], ctxlock.ErrUnavailable) {
		t.Fatal("ErrLost must not be transient")
	}
	lk, _, _ := b.Keys("ext")
	if pttl, _ := c.PTTL(ctx, lk).Result(); pttl < 15*time.Second {
		t.Fatalf("PTTL after extend = %v", pttl)
	}
	// Release by the wrong owner is a no-op reported as nil.
	if errs := b.Release(ctx, []ctxlock.Lease{wrong}); errors.Join(errs...) != nil {
		t.Fatalf("Release(wrong) = %v", errs)
	}
	if n, _ := c.Exists(ctx, lk).Result(); n != 1 {
		t.Fatal("wrong owner released the lock")
	}
	// A lease that is gone: ErrLost on extend.
	if errs := b.Release(ctx, []ctxlock.Lease{l}); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	if errs := b.Extend(ctx, []ctxlock.Lease{l}, time.Second); errs == nil || !errors.Is(errs[0], ctxlock.ErrLost) {
		t.Fatalf("Extend after release = %v", errs)
	}
}

func TestReleaseWakesWatcherOfOtherBackend(t *testing.T) {
	s := redistest.StartServer(t)
	holder := newBackend(t, s.Client(t))
	waiter := newBackend(t, s.Client(t))
	l := acquire(t, holder, "w", 10*time.Second)

	ch, stop := waiter.Watch("w")
	defer stop()
	other, stopOther := waiter.Watch("other")
	defer stopOther()
	if ch == nil {
		t.Fatal("Watch returned a nil channel")
	}
	if errs := holder.Release(context.Background(), []ctxlock.Lease{l}); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	received(t, ch, "release")
	if _, err := waiter.Acquire(context.Background(), ctxlock.AcquireRequest{Key: "w", Owner: owner(), TTL: time.Second, Timeout: time.Second}); err != nil {
		t.Fatalf("Acquire after wake: %v", err)
	}
	select {
	case <-other:
		t.Fatal("watcher of another key woke up")
	default:
	}
}

// A Watch waiting for the server to confirm its subscription stops waiting
// when the subscription goes down (here: the server is gone before the
// first Watch), rather than for the whole WithSubscribeWait.
func TestWatchDoesNotWaitForDeadServer(t *testing.T) {
	s := redistest.StartServer(t)
	b := newBackend(t, s.Client(t), goredis.WithSubscribeWait(5*time.Second))
	s.Kill()
	start := time.Now()
	_, stop := b.Watch("k")
	defer stop()
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("Watch with the server gone returned after %v; want as soon as the subscription failed", el)
	}
	conds, _ := b.Health(context.Background())
	if !strings.Contains(strings.Join(conds, "; "), "subscription down") {
		t.Fatalf("Health: %q; want the subscription reported down", conds)
	}
	s.Restart() // so that the client's background redials end
}

func TestWatchSharedAndStop(t *testing.T) {
	s := redistest.StartServer(t)
	holder := newBackend(t, s.Client(t))
	waiter := newBackend(t, s.Client(t))
	// Many watchers of one key share the subscription; stopping some keeps
	// the others served.
	var chans []<-chan struct{}
	var stops []func()
	for range 10 {
		ch, stop := waiter.Watch("shared")
		chans = append(chans, ch)
		stops = append(stops, stop)
	}
	for _, stop := range stops[:5] {
		stop()
		stop() // idempotent
	}
	l := acquire(t, holder, "shared", time.Second)
	if errs := holder.Release(context.Background(), []ctxlock.Lease{l}); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	for _, ch := range chans[5:] {
		received(t, ch, "release")
	}
	for _, stop := range stops[5:] {
		stop()
	}
	// Unsubscribed and subscribed again.
	ch, stop := waiter.Watch("shared")
	defer stop()
	l = acquire(t, holder, "shared", time.Second)
	if errs := holder.Release(context.Background(), []ctxlock.Lease{l}); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	received(t, ch, "release after resubscribe")
}

func TestLapseWakesWatcher(t *testing.T) {
	s := redistest.StartServer(t, redistest.WithArgs("--notify-keyspace-events", "Ex"))
	holder := newBackend(t, s.Client(t))
	waiter := newBackend(t, s.Client(t), goredis.WithExpiryNotifications())
	acquire(t, holder, "lapse", 50*time.Millisecond)
	ch, stop := waiter.Watch("lapse")
	defer stop()
	received(t, ch, "lapse")
	// Woken by the expiry: the lease is gone (a retry may still race the
	// expiry cycle, so allow a few wake-ups).
	deadline := time.Now().Add(waitLong)
	for {
		_, err := waiter.Acquire(context.Background(), ctxlock.AcquireRequest{Key: "lapse", Owner: owner(), TTL: time.Second, Timeout: time.Second})
		if err == nil {
			break
		}
		if !errors.Is(err, ctxlock.ErrHeld) || time.Now().After(deadline) {
			t.Fatalf("Acquire after lapse: %v", err)
		}
		received(t, ch, "lapse")
	}
}

// pipelineCounter counts pipelines (round trips) and single commands.
type pipelineCounter struct {
	pipelines, cmds, single atomic.Int64
}

func (p *pipelineCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (p *pipelineCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		p.single.Add(1)
		return next(ctx, cmd)
	}
}
func (p *pipelineCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		p.pipelines.Add(1)
		p.cmds.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

func (p *pipelineCounter) reset() { p.pipelines.Store(0); p.cmds.Store(0); p.single.Store(0) }

func acquireMany(t testing.TB, b ctxlock.Backend, n int, ttl time.Duration) []ctxlock.Lease {
	t.Helper()
	leases := make([]ctxlock.Lease, n)
	for i := range leases {
		leases[i] = acquire(t, b, fmt.Sprintf("batch-%d", i), ttl)
	}
	return leases
}

func TestBatchOneRoundTrip(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	var counter pipelineCounter
	c.AddHook(&counter)
	b := newBackend(t, c)
	ctx := context.Background()
	leases := acquireMany(t, b, 1000, 10*time.Second)
	// Warm the script cache (the first batch may need the EVAL fallback).
	if errs := b.Extend(ctx, leases[:1], 10*time.Second); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	if errs := b.Release(ctx, []ctxlock.Lease{{Key: "warm", Owner: "x"}}); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	counter.reset()
	if errs := b.Extend(ctx, leases, 20*time.Second); errors.Join(errs...) != nil {
		t.Fatalf("Extend: %v", errs)
	}
	if p, n, one := counter.pipelines.Load(), counter.cmds.Load(), counter.single.Load(); p != 1 || n != 1000 || one != 0 {
		t.Fatalf("Extend of 1000 leases: %d pipelines, %d commands, %d single calls; want 1, 1000, 0", p, n, one)
	}
	counter.reset()
	if errs := b.Release(ctx, leases); errors.Join(errs...) != nil {
		t.Fatalf("Release: %v", errs)
	}
	if p := counter.pipelines.Load(); p != 1 {
		t.Fatalf("Release of 1000 leases: %d pipelines", p)
	}
	if n, _ := c.DBSize(ctx).Result(); n != 1000 { // only the fence counters remain
		t.Fatalf("DBSIZE after release = %d, want 1000 fence counters", n)
	}
}

func TestNoScriptFallback(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	b := newBackend(t, c)
	ctx := context.Background()
	l := acquire(t, b, "ns", time.Second)
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if errs := b.Extend(ctx, []ctxlock.Lease{l}, time.Second); errors.Join(errs...) != nil {
		t.Fatalf("Extend after SCRIPT FLUSH: %v", errs)
	}
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if errs := b.Release(ctx, []ctxlock.Lease{l}); errors.Join(errs...) != nil {
		t.Fatalf("Release after SCRIPT FLUSH: %v", errs)
	}
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	acquire(t, b, "ns", time.Second)
}

func TestWrongTypeIsPermanent(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	b := newBackend(t, c)
	ctx := context.Background()
	lk, fk, _ := b.Keys("wt")
	if err := c.HSet(ctx, lk, "f", "v").Err(); err != nil {
		t.Fatal(err)
	}
	check := func(op string, err error) {
		t.Helper()
		if err == nil || errors.Is(err, ctxlock.ErrUnavailable) || errors.Is(err, ctxlock.ErrHeld) ||
			!strings.Contains(err.Error(), "WRONGTYPE") || !strings.Contains(err.Error(), `"wt"`) {
			t.Fatalf("%s on a hash: %v; want a permanent WRONGTYPE error naming the key", op, err)
		}
	}
	_, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: "wt", Owner: owner(), TTL: time.Second, Timeout: time.Second})
	check("Acquire", err)
	l := ctxlock.Lease{Key: "wt", Owner: owner(), Token: 1}
	errs := b.Extend(ctx, []ctxlock.Lease{l}, time.Second)
	check("Extend", errs[0])
	errs = b.Release(ctx, []ctxlock.Lease{l})
	check("Release", errs[0])

	// A fence counter of the wrong type fails the acquire before anything is written.
	if err := c.Del(ctx, lk).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, fk, "not a number", 0).Err(); err != nil {
		t.Fatal(err)
	}
	_, err = b.Acquire(ctx, ctxlock.AcquireRequest{Key: "wt", Owner: owner(), TTL: time.Second, Timeout: time.Second})
	if err == nil || errors.Is(err, ctxlock.ErrUnavailable) {
		t.Fatalf("Acquire with a bad fence counter: %v", err)
	}
	if n, _ := c.Exists(ctx, lk).Result(); n != 0 {
		t.Fatal("lock written although the fence counter was unusable")
	}
}

func TestInvalidInput(t *testing.T) {
	s := redistest.StartServer(t)
	b := newBackend(t, s.Client(t))
	ctx := context.Background()
	for _, req := range []ctxlock.AcquireRequest{
		{Key: "", Owner: "o", TTL: time.Second},
		{Key: "k", Owner: "", TTL: time.Second},
		{Key: "k", Owner: "a\x00b", TTL: time.Second},
		{Key: "k", Owner: "o", TTL: 0},
		{Key: "k", Owner: "o", TTL: -time.Nanosecond},
		{Key: "k", Owner: "o", TTL: -time.Millisecond + 1},
	} {
		if _, err := b.Acquire(ctx, req); err == nil || errors.Is(err, ctxlock.ErrUnavailable) {
			t.Errorf("Acquire(%+v) = %v, want a permanent error", req, err)
		}
	}
	errs := b.Extend(ctx, []ctxlock.Lease{{Key: "", Owner: "o"}, {Key: "k", Owner: "o"}}, time.Second)
	if len(errs) != 2 || errs[0] == nil || !errors.Is(errs[1], ctxlock.ErrLost) {
		t.Fatalf("Extend = %v", errs)
	}
	if errs := b.Extend(ctx, nil, time.Second); len(errs) != 0 {
		t.Fatalf("Extend(nil) = %v", errs)
	}
}

func TestKillRestart(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	b := newBackend(t, c, goredis.WithHealthCheckInterval(100*time.Millisecond))
	ctx := context.Background()
	l := acquire(t, b, "kr", 10*time.Second)
	ch, stop := b.Watch("kr-waiter")
	defer stop()

	s.Kill()
	_, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: "kr2", Owner: owner(), TTL: time.Second, Timeout: 200 * time.Millisecond})
	if !errors.Is(err, ctxlock.ErrUnavailable) {
		t.Fatalf("Acquire on a dead server: %v, want ErrUnavailable", err)
	}
	if errs := b.Extend(ctx, []ctxlock.Lease{l}, time.Second); errs == nil || !errors.Is(errs[0], ctxlock.ErrUnavailable) {
		t.Fatalf("Extend on a dead server: %v", errs)
	}
	if errs := b.Release(ctx, []ctxlock.Lease{l}); errs == nil || !errors.Is(errs[0], ctxlock.ErrUnavailable) {
		t.Fatalf("Release on a dead server: %v", errs)
	}
	hctx, cancel := context.WithTimeout(ctx, time.Second)
	conds, err := b.Health(hctx)
	cancel()
	if !errors.Is(err, ctxlock.ErrUnavailable) || len(conds) == 0 {
		t.Fatalf("Health on a dead server: %v, %v", conds, err)
	}
	// Drain the wake-up the kill may have caused, then wait for the one
	// the reconnect sends.
	select {
	case <-ch:
	default:
	}
	s.Restart()
	deadline := time.Now().Add(waitLong)
	for {
		_, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: "kr", Owner: owner(), TTL: time.Second, Timeout: time.Second})
		if err == nil {
			break // the data is gone with the restart: the key is free
		}
		if !errors.Is(err, ctxlock.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("Acquire after restart: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // retrying against a restarting server
	}
	received(t, ch, "reconnect")
	for {
		conds, err := b.Health(ctx)
		if err == nil && len(conds) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Health after restart: %v, %v", conds, err)
		}
		time.Sleep(20 * time.Millisecond) // waiting for the subscription to come back
	}
}

// attemptCounter counts a Backend's acquire attempts (Acquire, Relock).
type attemptCounter struct {
	*goredis.Backend
	attempts atomic.Int64
}

func (b *attemptCounter) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	b.attempts.Add(1)
	return b.Backend.Acquire(ctx, req)
}

func (b *attemptCounter) Relock(ctx context.Context, old ctxlock.Lease, req ctxlock.AcquireRequest) (ctxlock.Lease, bool, bool, error) {
	b.attempts.Add(1)
	return b.Backend.Relock(ctx, old, req)
}

// A Lock that waits while the server is down retries on its backoff
// (10ms, doubling): a handful of attempts in 500ms, not thousands, however
// fast each one fails, and not just one either (its subscription, which
// cannot be confirmed, must not hold it up); it ends at its deadline with
// the fault joined in.
func TestLockBacksOffWhileServerDown(t *testing.T) {
	s := redistest.StartServer(t)
	b := &attemptCounter{Backend: newBackend(t, s.Client(t))}
	m := ctxlock.NewManager(b)
	defer m.Close(context.Background())
	acquire(t, b, "warm", time.Second)
	s.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := m.NewLock("down").Lock(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ctxlock.ErrUnavailable) {
		t.Fatalf("Lock while the server is down: %v; want DeadlineExceeded with the fault", err)
	}
	if n := b.attempts.Load() - 1; n < 3 || n > 40 {
		t.Fatalf("%d acquire attempts in 500ms while the server was down; want about six", n)
	}
	s.Restart() // so that the client's background redials end
}

// A Lock returns when its context ends even with the server frozen: it
// neither waits for the Leave of its place in the queue (which takes until
// the 3s AcquireTimeout here) nor, after attempts that failed, for a
// subscription the server cannot confirm (the 3s SubscribeWait).
func TestLockReturnsAtDeadlineWhenServerFrozen(t *testing.T) {
	for _, tc := range []struct {
		name           string
		deadline, each time.Duration // the Lock's context, WithAcquireTimeout
	}{
		{"within the first attempt", 300 * time.Millisecond, 3 * time.Second},
		{"after failed attempts", time.Second, 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := redistest.StartServer(t)
			c := s.Client(t, func(o *redis.Options) {
				o.DialTimeout, o.ReadTimeout, o.WriteTimeout = 5*time.Second, 5*time.Second, 5*time.Second
			})
			b := newBackend(t, c, goredis.WithSubscribeWait(3*time.Second))
			m := ctxlock.NewManager(b)
			acquire(t, b, "warm", time.Second)
			s.Stop()
			defer s.Cont()
			ctx, cancel := context.WithTimeout(context.Background(), tc.deadline)
			defer cancel()
			start := time.Now()
			_, err := m.NewLock("frozen", ctxlock.WithAcquireTimeout(tc.each)).Lock(ctx)
			el := time.Since(start)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Lock with the server frozen: %v; want DeadlineExceeded", err)
			}
			if el > tc.deadline+time.Second {
				t.Fatalf("Lock with a %v deadline returned after %v", tc.deadline, el)
			}
			s.Cont()
			if err := m.Close(context.Background()); err != nil {
				t.Fatalf("Close: %v", err)
			}
		})
	}
}

func TestFrozenServerAcquireTimeout(t *testing.T) {
	s := redistest.StartServer(t)
	b := newBackend(t, s.Client(t))
	acquire(t, b, "warm", time.Second)
	s.Stop()
	defer s.Cont()
	start := time.Now()
	_, err := b.Acquire(context.Background(), ctxlock.AcquireRequest{Key: "fz", Owner: owner(), TTL: time.Second, Timeout: 100 * time.Millisecond})
	if !errors.Is(err, ctxlock.ErrUnavailable) {
		t.Fatalf("Acquire on a frozen server: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Fatalf("Acquire took %v despite a 100ms timeout", d)
	}
}

func TestCloseIsIdempotentAndStopsWatch(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	b := goredis.New(c)
	ch, stop := b.Watch("x")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	stop()
	select {
	case <-ch: // woken at close: retry now
	default:
		t.Fatal("Close did not wake the watcher")
	}
	if ch2, stop2 := b.Watch("x"); ch2 != nil {
		stop2()
		t.Fatal("Watch after Close returned a channel")
	}
	// The client is not the backend's: it still works.
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentWatchRelease(t *testing.T) {
	s := redistest.StartServer(t)
	holder := newBackend(t, s.Client(t))
	waiter := newBackend(t, s.Client(t))
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			key := fmt.Sprintf("cw-%d", i%5)
			for range 10 {
				ch, stop := waiter.Watch(key)
				l, err := holder.Acquire(context.Background(), ctxlock.AcquireRequest{Key: key, Owner: owner(), TTL: time.Second, Timeout: time.Second})
				if err == nil {
					holder.Release(context.Background(), []ctxlock.Lease{l})
					<-ch
				}
				stop()
			}
		})
	}
	wg.Wait()
}

// A lease in its last millisecond reads PTTL 0; the refusal must still say
// "expires within 1ms", not "unknown" (0), or a Manager waiting for the
// lapse would back off for up to MaxRetryDelay.
func TestRefusalInLastMillisecond(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	b := newBackend(t, c)
	ctx := context.Background()
	lk, _, _ := b.Keys("k")

	refusals := 0
	for i := 0; i < 2000 && refusals < 200; i++ {
		now, err := c.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		// Expires at the end of the server's next millisecond: the acquire
		// below often runs within it.
		if err := c.Set(ctx, lk, "someone-else", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.PExpireAt(ctx, lk, now.Add(time.Millisecond)).Err(); err != nil {
			t.Fatal(err)
		}
		_, err = b.Acquire(ctx, ctxlock.AcquireRequest{Key: "k", Owner: owner(), TTL: time.Second, Timeout: time.Second})
		var held *ctxlock.HeldError
		switch {
		case err == nil:
			if err := c.Del(ctx, lk).Err(); err != nil {
				t.Fatal(err)
			}
		case errors.As(err, &held):
			refusals++
			if held.Remaining <= 0 || held.Remaining > 2*time.Millisecond {
				t.Fatalf("refused with Remaining %v; want 1ms or 2ms", held.Remaining)
			}
		default:
			t.Fatal(err)
		}
	}
	if refusals == 0 {
		t.Fatal("no attempt found the lease alive: the test checked nothing")
	}
}

// With the server down, go-redis re-dials within the call until the
// attempt's deadline, so the error is a deadline: it says where to find the
// cause, and Health names it.
func TestUnreachableServerErrorPointsToHealth(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	b := newBackend(t, c)
	_, err := b.Acquire(context.Background(), ctxlock.AcquireRequest{Key: "k", Owner: owner(), TTL: time.Second, Timeout: 50 * time.Millisecond})
	if !errors.Is(err, ctxlock.ErrUnavailable) {
		t.Fatalf("Acquire = %v; want ErrUnavailable", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "refused") && !strings.Contains(msg, "Health") {
		t.Fatalf("Acquire = %v; want the cause, or a pointer to Health", err)
	}
	conds, herr := b.Health(context.Background())
	if herr == nil || len(conds) == 0 || !strings.Contains(conds[0], "refused") {
		t.Fatalf("Health = %q, %v; want the refused connection named", conds, herr)
	}
}
