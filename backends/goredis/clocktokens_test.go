package goredis_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// serverMicros returns the server's clock (TIME) in microseconds.
func serverMicros(t testing.TB, c *redis.Client) uint64 {
	t.Helper()
	now, err := c.Time(context.Background()).Result()
	if err != nil {
		t.Fatalf("TIME: %v", err)
	}
	return uint64(now.UnixMicro())
}

// fenceState returns key's fencing counter and its PTTL (-1: none, -2: no
// counter).
func fenceState(t testing.TB, c *redis.Client, b *goredis.Backend, key string) (uint64, time.Duration) {
	t.Helper()
	ctx := context.Background()
	_, fk, _ := b.Keys(key)
	pttl, err := c.PTTL(ctx, fk).Result()
	if err != nil {
		t.Fatalf("PTTL %s: %v", fk, err)
	}
	v, err := c.Get(ctx, fk).Result()
	if errors.Is(err, redis.Nil) {
		return 0, pttl
	}
	if err != nil {
		t.Fatalf("GET %s: %v", fk, err)
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("fence counter %q: %v", v, err)
	}
	return n, pttl
}

func release(t testing.TB, b ctxlock.Backend, l ctxlock.Lease) {
	t.Helper()
	if errs := b.Release(context.Background(), []ctxlock.Lease{l}); errors.Join(errs...) != nil {
		t.Fatalf("Release(%q): %v", l.Key, errs)
	}
}

// clockTokenWithin fails unless token lies in [lo, hi] (server clock in µs).
func clockTokenWithin(t testing.TB, what string, token, lo, hi uint64) {
	t.Helper()
	if token < lo || token > hi {
		t.Fatalf("%s: token %d; want the server clock, between %d and %d (µs)", what, token, lo, hi)
	}
}

// With WithClockTokens the token is the server's clock in µs (the counter
// is far below it), stored back in the counter, which gets the counter TTL.
func TestClockTokensAcquire(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	b := newBackend(t, c, goredis.WithClockTokens(time.Hour))
	before := serverMicros(t, c)
	l := acquire(t, b, "k", 10*time.Second)
	after := serverMicros(t, c)
	clockTokenWithin(t, "Acquire", l.Token, before, after)
	fence, pttl := fenceState(t, c, b, "k")
	if fence != l.Token {
		t.Fatalf("fence counter %d; want the token %d stored back", fence, l.Token)
	}
	if pttl <= time.Hour-time.Minute || pttl > time.Hour {
		t.Fatalf("fence counter PTTL %v; want about the counter TTL, 1h", pttl)
	}
	// A counter ahead of the clock still counts up.
	_, fk, _ := b.Keys("ahead")
	ahead := after + uint64(time.Hour/time.Microsecond)
	if err := c.Set(context.Background(), fk, ahead, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if l := acquire(t, b, "ahead", 10*time.Second); l.Token != ahead+1 {
		t.Fatalf("Acquire with the counter ahead of the clock: token %d; want the counter + 1, %d", l.Token, ahead+1)
	}
	if _, pttl := fenceState(t, c, b, "ahead"); pttl <= time.Hour-time.Minute || pttl > time.Hour {
		t.Fatalf("fence counter PTTL %v after an increment; want it refreshed to 1h", pttl)
	}
}

// counterTTL ≤ 0 keeps the counter for good but still seeds it from the
// clock.
func TestClockTokensWithoutCounterTTL(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	b := newBackend(t, c, goredis.WithClockTokens(0))
	before := serverMicros(t, c)
	l := acquire(t, b, "k", 10*time.Second)
	clockTokenWithin(t, "Acquire", l.Token, before, serverMicros(t, c))
	if fence, pttl := fenceState(t, c, b, "k"); fence != l.Token || pttl != -1 {
		t.Fatalf("fence counter %d, PTTL %v; want the token %d, no TTL", fence, pttl, l.Token)
	}
}

// An unused counter expires, and the next token, from the clock again, is
// above every earlier one.
func TestClockTokensCounterExpires(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	b := newBackend(t, c, goredis.WithClockTokens(200*time.Millisecond))
	ctx := context.Background()
	first := acquire(t, b, "k", 10*time.Second)
	release(t, b, first)
	_, fk, _ := b.Keys("k")
	deadline := time.Now().Add(3 * time.Second)
	for {
		n, err := c.Exists(ctx, fk).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fence counter is still there 3s after its 200ms TTL")
		}
		time.Sleep(10 * time.Millisecond) // polling the server for the expiry
	}
	second := acquire(t, b, "k", 10*time.Second)
	if second.Token <= first.Token {
		t.Fatalf("token after the counter expired %d; want above the last one, %d", second.Token, first.Token)
	}
}

// A server restarted empty (no persistence) forgets the counters: tokens
// start again at 1 without the option, but continue above the earlier
// ones with it.
func TestClockTokensAcrossEmptyRestart(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	clocked := newBackend(t, c, goredis.WithClockTokens(time.Hour))
	plain := newBackend(t, c)
	var last uint64
	for range 3 {
		l := acquire(t, clocked, "k", 10*time.Second)
		if l.Token <= last {
			t.Fatalf("token %d after %d", l.Token, last)
		}
		last = l.Token
		release(t, clocked, l)
	}
	release(t, plain, acquire(t, plain, "plain", 10*time.Second))
	release(t, plain, acquire(t, plain, "plain", 10*time.Second))

	s.Kill()
	s.Restart()
	c = s.Client(t)
	if n, err := c.DBSize(context.Background()).Result(); err != nil || n != 0 {
		t.Fatalf("after the restart DBSIZE = %d, %v; want an empty server", n, err)
	}
	clocked = newBackend(t, c, goredis.WithClockTokens(time.Hour))
	plain = newBackend(t, c)
	if l := acquire(t, plain, "plain", 10*time.Second); l.Token != 1 {
		t.Fatalf("without the option, token %d after an empty restart; want 1 (the limit WithClockTokens lifts)", l.Token)
	}
	if l := acquire(t, clocked, "k", 10*time.Second); l.Token <= last {
		t.Fatalf("with the option, token %d after an empty restart; want above the last one before it, %d", l.Token, last)
	}
}

// A hand-off (a release granting the key to a Manager's queued waiter) and
// relocks issue clock tokens too, strictly increasing.
func TestClockTokensHandoffAndRelock(t *testing.T) {
	e := newHandoffEnvWith(t, goredis.DefaultWaiterKeep, []goredis.Option{goredis.WithClockTokens(time.Hour)})
	held := e.holder.Token()
	before := serverMicros(t, e.c)
	if held > before {
		t.Fatalf("holder's token %d above the clock %d", held, before)
	}
	e.holder.Unlock()
	e.acquired()
	got := e.waiter.Token()
	clockTokenWithin(t, "hand-off", got, before, serverMicros(t, e.c))
	if got <= held {
		t.Fatalf("hand-off token %d; want above the holder's %d", got, held)
	}
	v, err := e.c.Get(context.Background(), e.lockKey).Result()
	if want := ctxlock.GrantOwner(e.wid, got); err != nil || v != want {
		t.Fatalf("lock value %q, %v; want %q: granted by the release, not acquired", v, err, want)
	}
	e.waiter.Unlock()

	// The Manager relocks (one script releases and takes again) when a
	// Lock follows its own Unlock of the same key before the release went
	// out; either way the tokens increase and follow the clock.
	s := redistest.StartServer(t)
	c := s.Client(t)
	rb := &relockCounter{Backend: newBackend(t, c, goredis.WithClockTokens(time.Hour))}
	m := ctxlock.NewManager(rb)
	defer m.Close(context.Background())
	l := m.NewLock("r")
	last := uint64(0)
	for range 20 {
		lo := serverMicros(t, c)
		if _, err := l.Lock(context.Background()); err != nil {
			t.Fatal(err)
		}
		tok := l.Token()
		if tok <= last || tok < lo {
			t.Fatalf("token %d after %d (clock before the Lock %d)", tok, last, lo)
		}
		last = tok
		_ = l.Unlock()
	}
	t.Logf("%d of 20 Locks relocked", rb.relocks())

	// The relock paths, on the backend: the fast path (nobody waits), and a
	// relock that hands the key to the first waiter.
	ctx := context.Background()
	b := rb.Backend
	first := acquire(t, b, "q", 10*time.Second)
	lo := serverMicros(t, c)
	second, wanted, _, err := b.Relock(ctx, first, waitReq(""))
	if err != nil || wanted {
		t.Fatalf("Relock: %+v, wanted %v, %v", second, wanted, err)
	}
	clockTokenWithin(t, "Relock", second.Token, max(lo, first.Token+1), serverMicros(t, c))
	mustRefuse(t, b, "w1")
	ch, stop := b.WatchWaiter("q", "w1")
	defer stop()
	drain(ch)
	lo = serverMicros(t, c)
	if _, wanted, queued, err := b.Relock(ctx, second, waitReq("w2")); err != nil || !wanted || !queued {
		t.Fatalf("Relock with w1 queued: wanted %v, queued %v, %v; want the key handed to w1", wanted, queued, err)
	}
	h := granted(t, ch, "the relock (w1 is first)")
	clockTokenWithin(t, "Relock's hand-off", h.Token, max(lo, second.Token+1), serverMicros(t, c))
	// w1 leaves: leave.lua hands the key on to w2.
	ch2, stop2 := b.WatchWaiter("q", "w2")
	defer stop2()
	drain(ch2)
	lo = serverMicros(t, c)
	if err := b.Leave(ctx, "q", "w1"); err != nil {
		t.Fatal(err)
	}
	h2 := granted(t, ch2, "w1 left")
	clockTokenWithin(t, "Leave's hand-off", h2.Token, max(lo, h.Token+1), serverMicros(t, c))
	if _, pttl := fenceState(t, c, b, "q"); pttl <= time.Hour-time.Minute {
		t.Fatalf("fence counter PTTL %v after the hand-offs; want about 1h", pttl)
	}
}

// relockCounter counts a Backend's Relock calls.
type relockCounter struct {
	*goredis.Backend
	mu sync.Mutex
	n  int
}

func (b *relockCounter) Relock(ctx context.Context, old ctxlock.Lease, req ctxlock.AcquireRequest) (ctxlock.Lease, bool, bool, error) {
	b.mu.Lock()
	b.n++
	b.mu.Unlock()
	return b.Backend.Relock(ctx, old, req)
}

func (b *relockCounter) relocks() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// argvCounter records the number of script arguments (ARGV) of each
// EVALSHA its client sends (an EVAL after NOSCRIPT repeats one).
type argvCounter struct {
	mu   sync.Mutex
	argv []int
}

func (a *argvCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (a *argvCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		a.record(cmd)
		return next(ctx, cmd)
	}
}

func (a *argvCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			a.record(cmd)
		}
		return next(ctx, cmds)
	}
}

func (a *argvCounter) record(cmd redis.Cmder) {
	args := cmd.Args()
	if strings.ToLower(cmd.Name()) != "evalsha" || len(args) < 3 {
		return
	}
	keys, _ := strconv.Atoi(strings.TrimSpace(toString(args[2])))
	a.mu.Lock()
	a.argv = append(a.argv, len(args)-3-keys)
	a.mu.Unlock()
}

func toString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int:
		return strconv.Itoa(v)
	case int64:
		return strconv.FormatInt(v, 10)
	}
	return ""
}

func (a *argvCounter) take() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := a.argv
	a.argv = nil
	return out
}

// Without the option nothing changes: tokens 1, 2, 3, a counter without
// TTL, the scripts' arguments and the commands they run on the
// uncontended path (INCR and SET, no TIME) as before.
func TestClockTokensOffByDefault(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []goredis.Option
		argv []int // acquire, release, acquire, relock
		time int   // TIME calls
	}{
		{"default", nil, []int{5, 2, 5, 7}, 0},
		{"hints", []goredis.Option{goredis.WithWaiterHints(0)}, []int{6, 3, 6, 8}, 0},
		{"clock", []goredis.Option{goredis.WithClockTokens(time.Hour)}, []int{7, 4, 7, 9}, 3},
		{"clock and hints", []goredis.Option{goredis.WithWaiterHints(0), goredis.WithClockTokens(time.Hour)}, []int{7, 4, 7, 9}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := redistest.StartServer(t)
			c := s.Client(t)
			argv := &argvCounter{}
			bc := s.Client(t)
			bc.AddHook(argv)
			b := newBackend(t, bc, tc.opts...)
			ctx := context.Background()
			if err := c.ConfigResetStat(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			first := acquire(t, b, "k", 10*time.Second)
			release(t, b, first)
			second := acquire(t, b, "k", 10*time.Second)
			third, _, _, err := b.Relock(ctx, second, ctxlock.AcquireRequest{Key: "k", Owner: owner(), TTL: 10 * time.Second, Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			calls := commandCalls(t, c)
			if got := argv.take(); !slices.Equal(got, tc.argv) {
				t.Errorf("script ARGV counts %v; want %v", got, tc.argv)
			}
			if calls["time"] != tc.time || calls["incr"] != 3 {
				t.Errorf("TIME called %d times, INCR %d; want %d and 3", calls["time"], calls["incr"], tc.time)
			}
			fence, pttl := fenceState(t, c, b, "k")
			if tc.time == 0 {
				if first.Token != 1 || second.Token != 2 || third.Token != 3 {
					t.Errorf("tokens %d, %d, %d; want 1, 2, 3", first.Token, second.Token, third.Token)
				}
				if fence != 3 || pttl != -1 {
					t.Errorf("fence counter %d, PTTL %v; want 3, no TTL", fence, pttl)
				}
				if calls["set"] != 3 {
					t.Errorf("SET called %d times; want 3 (the leases)", calls["set"])
				}
			} else if !(first.Token < second.Token && second.Token < third.Token && third.Token > 1e15) || fence != third.Token || pttl <= 0 {
				t.Errorf("tokens %d, %d, %d, fence counter %d, PTTL %v; want increasing clock tokens, the last stored with a TTL",
					first.Token, second.Token, third.Token, fence, pttl)
			}
		})
	}
}

// A refusal after a grant reports a fence at or above the grant's token
// (ctxlock.Handoff: a grant not above a later refusal's Fence is stale),
// also once the counter expired while the key is held: a hold kept by
// Extend outlives counterTTL even when counterTTL is above the lease TTL.
// A refusal reporting 0 there made the Manager adopt a grant that lapsed
// long before, while another owner holds the key.
func TestClockTokensRefusalFenceAfterCounterExpired(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	b := newBackend(t, c, goredis.WithClockTokens(300*time.Millisecond))
	ctx := context.Background()
	first := acquire(t, b, "q", 10*time.Second)
	ch, stop := b.WatchWaiter("q", "w")
	defer stop()
	drain(ch)
	mustRefuse(t, b, "w")
	release(t, b, first)
	h := granted(t, ch, "the release (w is queued)")
	// w never hears it (a lost or late message) and gives up: the grant
	// ends, and x takes the key and keeps it with a 200ms lease.
	if err := b.Leave(ctx, "q", "w"); err != nil {
		t.Fatal(err)
	}
	x := acquire(t, b, "q", 200*time.Millisecond)
	if x.Token <= h.Token {
		t.Fatalf("token %d after the grant's %d", x.Token, h.Token)
	}
	_, fk, _ := b.Keys("q")
	deadline := time.Now().Add(3 * time.Second)
	for {
		if errs := b.Extend(ctx, []ctxlock.Lease{x}, 200*time.Millisecond); errors.Join(errs...) != nil {
			t.Fatalf("Extend: %v", errs)
		}
		if n, err := c.Exists(ctx, fk).Result(); err != nil || n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the fence counter is still there 3s after its 300ms TTL")
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, err := b.Acquire(ctx, waitReq("w"))
	var he *ctxlock.HeldError
	if !errors.As(err, &he) {
		t.Fatalf("Acquire while x holds the key: %v; want a HeldError", err)
	}
	if he.Fence < x.Token {
		t.Fatalf("refusal's Fence %d, below the holder's token %d and the earlier grant's %d: the stale grant would pass as newer than the refusal", he.Fence, x.Token, h.Token)
	}
}

// lateGrants holds back the grants WatchWaiter hears until the next
// refused Acquire has returned: a hand-off message delivered late.
type lateGrants struct {
	*goredis.Backend
	mu      sync.Mutex
	held    []ctxlock.Handoff
	out     chan ctxlock.Handoff
	refused chan struct{} // one per refusal
}

func (w *lateGrants) WatchWaiter(key, waiter string) (<-chan ctxlock.Handoff, func()) {
	in, stop := w.Backend.WatchWaiter(key, waiter)
	out := make(chan ctxlock.Handoff, 16)
	w.mu.Lock()
	w.out = out
	w.mu.Unlock()
	done := make(chan struct{})
	go func() {
		for {
			var h ctxlock.Handoff
			select {
			case h = <-in:
			case <-done:
				return
			}
			w.mu.Lock()
			if h.Token > 0 {
				w.held = append(w.held, h)
			} else {
				select {
				case out <- h:
				default:
				}
			}
			w.mu.Unlock()
		}
	}()
	var once sync.Once
	return out, func() { stop(); once.Do(func() { close(done) }) }
}

func (w *lateGrants) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	l, err := w.Backend.Acquire(ctx, req)
	if errors.Is(err, ctxlock.ErrHeld) {
		w.mu.Lock()
		for _, h := range w.held {
			w.out <- h
		}
		w.held = nil
		w.mu.Unlock()
		select {
		case w.refused <- struct{}{}:
		default:
		}
	}
	return l, err
}

// The Manager's view of TestClockTokensRefusalFenceAfterCounterExpired: a
// grant that lapsed, heard only after a refusal by a later holder whose
// hold outlived the counter, must not make a second holder.
func TestClockTokensLateGrantAfterCounterExpired(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	opt := goredis.WithClockTokens(300 * time.Millisecond)
	b := newBackend(t, c, opt)
	ctx := context.Background()
	a, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: "k", Owner: owner(), TTL: 1200 * time.Millisecond, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	lg := &lateGrants{Backend: newBackend(t, s.Client(t), opt), refused: make(chan struct{}, 16)}
	m := ctxlock.NewManager(lg)
	defer m.Close(ctx)
	w := m.NewLock("k", ctxlock.WithTTL(200*time.Millisecond))
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	got := make(chan error, 1)
	go func() { _, err := w.Lock(lctx); got <- err }()
	lockKey, _, _ := b.Keys("k")
	// The first refusal queues w; the second comes once it listens on its
	// inbox; then it sleeps for a's remaining TTL.
	<-lg.refused
	<-lg.refused
	time.Sleep(20 * time.Millisecond) // the Manager's goroutine reaching its wait: no other signal
	release(t, b, a)                  // granted to w for 200ms; w hears of it late
	for {
		if n, err := c.Exists(ctx, lockKey).Result(); err != nil || n == 0 {
			break
		}
		time.Sleep(5 * time.Millisecond) // polling the server: the grant lapses
	}
	// x's hold outlives the counter (300ms) by Extend. Its TTL leaves this
	// goroutine a second to extend it, even on a loaded machine.
	x := acquire(t, b, "k", time.Second)
	for {
		select {
		case err := <-got:
			if err == nil {
				t.Fatalf("w locked the key (token %d) while x holds it (token %d)", w.Token(), x.Token)
			}
			return
		case <-time.After(50 * time.Millisecond):
			if errs := b.Extend(ctx, []ctxlock.Lease{x}, time.Second); errors.Join(errs...) != nil {
				t.Fatalf("Extend: %v", errs)
			}
		}
	}
}
