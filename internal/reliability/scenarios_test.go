package reliability_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/backends/locktest"
	"github.com/ctxlock/ctxlock/internal/chaostest"
	"github.com/ctxlock/ctxlock/internal/faultproxy"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// Environment of the re-executed helper process.
const (
	helperEnv    = "CTXLOCK_RELIABILITY_HELPER_ADDR"
	helperKeyEnv = "CTXLOCK_RELIABILITY_HELPER_KEY"
)

// TestHelperProcess is not a test: TestLivenessA_HolderProcessKilled runs the
// test binary again with only this function, as the process that holds the
// lock and gets SIGKILLed. It acquires, prints "locked <token>", and blocks
// until its stdin closes (or it is killed).
func TestHelperProcess(t *testing.T) {
	addr := os.Getenv(helperEnv)
	if addr == "" {
		t.Skip("helper process of TestLivenessA_HolderProcessKilled")
	}
	c := redis.NewClient(clientOptions(addr))
	b := goredis.New(c)
	m := ctxlock.NewManager(b)
	l := m.NewLock(os.Getenv(helperKeyEnv), lockOpts()...)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if _, err := l.Lock(ctx); err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(2)
	}
	fmt.Printf("locked %d\n", l.Token())
	_, _ = io.Copy(io.Discard, os.Stdin) // block until the parent is done with us
	os.Exit(0)
}

// Liveness A: a lock is released when the process holding it crashes. The
// child holds a refreshed lease; after SIGKILL nobody refreshes it, and the
// parent acquires once it lapses on the server: not before, and promptly after.
func TestLivenessA_HolderProcessKilled(t *testing.T) {
	srv := redistest.StartServer(t)
	const key = "liveness-a"
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+srv.Addr(), helperKeyEnv+"="+key)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	defer func() {
		if !waited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		stdin.Close()
	}()
	lines := bufio.NewScanner(stdout)
	var childToken uint64
	for lines.Scan() {
		line := lines.Text()
		if tok, ok := strings.CutPrefix(line, "locked "); ok {
			childToken, err = strconv.ParseUint(tok, 10, 64)
			if err != nil {
				t.Fatalf("child said %q", line)
			}
			break
		}
		if strings.HasPrefix(line, "error ") {
			t.Fatalf("child failed to lock: %s", line)
		}
	}
	if childToken == 0 {
		t.Fatalf("child exited without locking: %v", lines.Err())
	}
	// Let the child refresh at least once, so the test covers a refreshed lease.
	time.Sleep(ttl / 2) // waiting for time to pass, not synchronising
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waited = true
	killedAt := time.Now()

	m := newRedisManager(t, srv.Addr())
	direct := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	st, err := inspect(ctx, direct, m.backend, key)
	if err != nil {
		t.Fatal(err)
	}
	if st.fence != childToken || st.pttl <= 0 {
		t.Fatalf("after the kill the server has fence %d, PTTL %v; want the child's token %d and a live lease", st.fence, st.pttl, childToken)
	}
	l := m.NewLock(key, lockOpts()...)
	if _, err := l.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	acquired := time.Now()
	defer l.Unlock()
	if l.Token() <= childToken {
		t.Errorf("token %d after the child's %d", l.Token(), childToken)
	}
	if acquired.Before(st.lapseLow()) {
		t.Errorf("acquired %v before the dead holder's lease lapsed", st.lapseLow().Sub(acquired))
	}
	late := acquired.Sub(st.lapseHigh())
	if late > 500*time.Millisecond {
		t.Errorf("acquired %v after the dead holder's lease lapsed; want prompt", late)
	}
	t.Logf("child SIGKILLed holding token %d; lease had %v left; parent acquired %v after the kill, %v after the lapse",
		childToken, st.pttl, acquired.Sub(killedAt).Round(time.Millisecond), late.Round(time.Millisecond))
}

// Liveness B: when the holder's connection is blackholed, its expiry channel
// closes with ErrExpired before the lease ends on the server, and another
// owner acquires only after that.
func TestLivenessB_Blackholed(t *testing.T) {
	srv := redistest.StartServer(t)
	px := faultproxy.Start(t, srv.Addr())
	a := newRedisManager(t, px.Addr())
	b := newRedisManager(t, srv.Addr())
	direct := srv.Client(t)
	const key = "liveness-b"
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()

	l := a.NewLock(key, lockOpts()...)
	exp, err := l.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	token := l.Token()
	time.Sleep(ttl) // hold through a few refreshes (waiting for time to pass)
	select {
	case <-exp:
		t.Fatalf("hold ended while the connection was fine: %v", l.Err())
	default:
	}
	px.Blackhole()
	cut := time.Now()

	type result struct {
		at    time.Time
		token uint64
		err   error
	}
	other := make(chan result, 1)
	go func() {
		ol := b.NewLock(key, lockOpts()...)
		_, err := ol.Lock(ctx)
		r := result{at: time.Now(), token: ol.Token(), err: err}
		if err == nil {
			_ = ol.Unlock()
		}
		other <- r
	}()

	var expiredAt time.Time
	select {
	case <-exp:
		expiredAt = time.Now()
	case r := <-other:
		t.Fatalf("another owner acquired (at %v, %v) while the holder's channel was open", r.at, r.err)
	case <-ctx.Done():
		t.Fatal("the expiry channel did not close while blackholed")
	}
	if !errors.Is(l.Err(), ctxlock.ErrExpired) {
		t.Errorf("Err() = %v; want ErrExpired", l.Err())
	}
	st, err := inspect(ctx, direct, b.backend, key)
	if err != nil {
		t.Fatal(err)
	}
	if st.fence != token || st.pttl <= 0 {
		t.Fatalf("when the channel closed, the server had fence %d and PTTL %v: the lease of token %d had already ended (Liveness B violated)",
			st.fence, st.pttl, token)
	}
	margin := st.lapseLow().Sub(expiredAt)
	r := <-other
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !r.at.After(expiredAt) || r.at.Before(st.lapseLow()) {
		t.Errorf("other owner acquired at %v, holder expired at %v, lease lapsed at %v",
			r.at.Format("15:04:05.000"), expiredAt.Format("15:04:05.000"), st.lapseLow().Format("15:04:05.000"))
	}
	if r.token <= token {
		t.Errorf("other owner's token %d after %d", r.token, token)
	}
	t.Logf("Liveness B margin: expiry channel closed %v before the server-side TTL ended (TTL %v, drift factor %v: allowance %v); "+
		"channel closed %v after the cut; other owner acquired %v after the lapse",
		margin.Round(time.Millisecond), ttl, drift, time.Duration(float64(ttl)*drift)+2*time.Millisecond,
		expiredAt.Sub(cut).Round(time.Millisecond), r.at.Sub(st.lapseHigh()).Round(time.Millisecond))
	px.Pass()
}

// TestServerFrozen_SIGSTOP freezes the server longer than the TTL while
// several Managers contend on one key. A holder whose server is frozen must
// see its hold expire; after SIGCONT others go on; no two holds overlap.
func TestServerFrozen_SIGSTOP(t *testing.T) {
	srv := redistest.StartServer(t)
	const key = "frozen"
	var (
		checker locktest.Checker
		tally   stats
	)
	ms := []*redisManager{newRedisManager(t, srv.Addr()), newRedisManager(t, srv.Addr()), newRedisManager(t, srv.Addr())}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i, m := range ms {
		for j := 0; j < 2; j++ {
			who := fmt.Sprintf("m%d/g%d", i, j)
			wg.Add(1)
			go func() {
				defer wg.Done()
				contend(ctx, m, key, who, &checker, &tally, 20*time.Millisecond)
			}()
		}
	}

	time.Sleep(ttl) // contention before the freeze (waiting for time to pass)
	// A dedicated holder: it has the lock when the server freezes.
	l := ms[0].NewLock(key, lockOpts()...)
	lctx, lcancel := context.WithTimeout(ctx, waitLong)
	defer lcancel()
	exp, err := l.Lock(lctx)
	if err != nil {
		t.Fatal(err)
	}
	start, token := time.Now(), l.Token()
	srv.Stop()
	frozen := time.Now()
	select {
	case <-exp:
	case <-lctx.Done():
		srv.Cont()
		t.Fatal("the frozen holder's channel did not close")
	}
	checker.Record(locktest.Hold{Key: key, Owner: "frozen holder", Token: token, Start: start, End: time.Now()})
	if !errors.Is(l.Err(), ctxlock.ErrExpired) {
		t.Errorf("frozen holder: Err() = %v; want ErrExpired", l.Err())
	}
	expiredAfter := time.Since(frozen)
	time.Sleep(ttl*3/2 - expiredAfter) // stay frozen for 1.5 TTL in all
	srv.Cont()
	thawed := time.Now()
	before := len(checker.Holds())
	time.Sleep(2 * ttl) // contention after the thaw
	cancel()
	wg.Wait()

	after := 0
	for _, h := range checker.Holds() {
		if h.Start.After(thawed) {
			after++
		}
	}
	n := checkNoViolations(t, &checker, nil)
	if after == 0 {
		t.Errorf("no hold after SIGCONT (%d before)", before)
	}
	t.Logf("frozen %v; holder expired %v into the freeze; %d holds checked (%d after SIGCONT), 0 overlaps wanted; %s",
		thawed.Sub(frozen).Round(time.Millisecond), expiredAfter.Round(time.Millisecond), n, after, tally.String())
}

// contend locks key in a loop until ctx is done, holding each time for up to
// maxHold, and records every hold.
func contend(ctx context.Context, m *redisManager, key, who string, c *locktest.Checker, tally *stats, maxHold time.Duration) {
	l := m.NewLock(key, lockOpts()...)
	for i := 0; ctx.Err() == nil; i++ {
		actx, cancel := context.WithTimeout(ctx, 5*ttl)
		exp, err := l.Lock(actx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				tally.Add("lock errors", 1)
			}
			continue
		}
		start := time.Now()
		token := l.Token()
		if token == 0 { // ended before we could read it: we never relied on it
			tally.Add("ended at once", 1)
			continue
		}
		d := time.Duration(i%8+1) * maxHold / 8
		h, ended := chaostest.HoldFor(l, exp, who, start, token, d)
		c.Record(h)
		tally.Add("holds", 1)
		if ended {
			tally.Add("ended "+chaostest.Reason(l.Err()), 1)
		}
	}
}

// Atomicity B: Unlock during an outage releases the lock as soon as the
// server is reachable again, long before the TTL.
func TestAtomicityB_UnlockDuringOutage(t *testing.T) {
	for _, mode := range []faultproxy.Mode{faultproxy.Reset, faultproxy.Blackhole} {
		t.Run(mode.String(), func(t *testing.T) {
			const longTTL = 5 * time.Second
			const outage = 400 * time.Millisecond
			srv := redistest.StartServer(t)
			px := faultproxy.Start(t, srv.Addr())
			a := newRedisManager(t, px.Addr())
			b := newRedisManager(t, srv.Addr())
			direct := srv.Client(t)
			key := "atomicity-b-" + mode.String()
			ctx, cancel := context.WithTimeout(context.Background(), waitLong)
			defer cancel()
			opts := lockOpts(ctxlock.WithTTL(longTTL))

			l := a.NewLock(key, opts...)
			exp, err := l.Lock(ctx)
			if err != nil {
				t.Fatal(err)
			}
			px.Set(mode)
			if err := l.Unlock(); err != nil {
				t.Fatalf("Unlock during the outage: %v", err)
			}
			unlocked := time.Now()
			select {
			case <-exp:
			default:
				t.Fatal("Unlock did not close the expiry channel at once")
			}
			acquired := make(chan time.Time, 1)
			go func() {
				ol := b.NewLock(key, opts...)
				if _, err := ol.Lock(ctx); err != nil {
					t.Error(err)
					acquired <- time.Time{}
					return
				}
				acquired <- time.Now()
				_ = ol.Unlock()
			}()
			time.Sleep(outage) // the outage (waiting for time to pass)
			conds, _ := a.Health(ctx)
			st, err := inspect(ctx, direct, b.backend, key)
			if err != nil {
				t.Fatal(err)
			}
			if st.pttl <= 0 {
				t.Fatalf("the lease is gone during the outage (PTTL %v): the release cannot have reached the server", st.pttl)
			}
			px.Pass()
			restored := time.Now()
			at := <-acquired
			if at.IsZero() {
				return
			}
			wait := at.Sub(restored)
			if wait > 1500*time.Millisecond || !at.Before(st.lapseLow().Add(-time.Second)) {
				t.Errorf("other owner acquired %v after the restore, lease would lapse %v after it; want soon after the restore",
					wait, st.lapseLow().Sub(restored))
			}
			t.Logf("%s outage of %v after Unlock; health during it %q; other owner acquired %v after the restore (%v before the lease's TTL)",
				mode, restored.Sub(unlocked).Round(time.Millisecond), conds, wait.Round(time.Millisecond), st.lapseLow().Sub(at).Round(time.Millisecond))
		})
	}
}

// TestServerRestartWithWaiters kills the server with SIGKILL while a lock is
// held and others wait, and starts it again on the same port. Everyone
// eventually acquires and no two holds overlap.
//
// Without persistence a restart loses every lease and fencing counter, so the
// server stays down for longer than the TTL first (the holder's hold expires
// meanwhile) and tokens start again at 1: the checker compares tokens within
// each server life. With AOF (appendfsync always) leases and counters survive,
// the restart is immediate and tokens keep increasing across it.
func TestServerRestartWithWaiters(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		delayed bool
	}{
		{"no persistence, delayed restart", nil, true},
		{"AOF always, immediate restart", []string{"--appendonly", "yes", "--appendfsync", "always"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.StartServer(t, redistest.WithArgs(tc.args...))
			const key = "restart"
			ms := []*redisManager{newRedisManager(t, srv.Addr()), newRedisManager(t, srv.Addr()), newRedisManager(t, srv.Addr())}
			ctx, cancel := context.WithTimeout(context.Background(), waitLong)
			defer cancel()

			var (
				mu        sync.Mutex
				holds     []locktest.Hold
				restarted time.Time
			)
			record := func(h locktest.Hold) {
				mu.Lock()
				holds = append(holds, h)
				mu.Unlock()
			}
			holder := ms[0].NewLock(key, lockOpts()...)
			exp, err := holder.Lock(ctx)
			if err != nil {
				t.Fatal(err)
			}
			hStart, hToken := time.Now(), holder.Token()

			const waiters = 6
			var wg sync.WaitGroup
			errs := make(chan error, waiters)
			for i := 0; i < waiters; i++ {
				m := ms[i%len(ms)]
				who := fmt.Sprintf("waiter %d", i)
				wg.Add(1)
				go func() {
					defer wg.Done()
					l := m.NewLock(key, lockOpts()...)
					exp, err := l.Lock(ctx)
					if err != nil {
						errs <- fmt.Errorf("%s: %w", who, err)
						return
					}
					h, _ := chaostest.HoldFor(l, exp, who, time.Now(), l.Token(), 20*time.Millisecond)
					record(h)
				}()
			}
			time.Sleep(ttl / 2) // let the waiters block (waiting for time to pass)
			srv.Kill()
			killed := time.Now()
			if tc.delayed {
				select {
				case <-exp:
				case <-ctx.Done():
					t.Fatal("the holder's channel did not close while the server was down")
				}
				record(locktest.Hold{Key: key, Owner: "holder", Token: hToken, Start: hStart, End: time.Now()})
				if !errors.Is(holder.Err(), ctxlock.ErrExpired) {
					t.Errorf("holder: Err() = %v; want ErrExpired", holder.Err())
				}
				time.Sleep(time.Until(killed.Add(ttl + ttl/2))) // a delayed restart
				srv.Restart()
				mu.Lock()
				restarted = time.Now()
				mu.Unlock()
			} else {
				srv.Restart()
				mu.Lock()
				restarted = time.Now()
				mu.Unlock()
				h, ended := chaostest.HoldFor(holder, exp, "holder", hStart, hToken, ttl)
				record(h)
				t.Logf("holder across the restart: ended on its own %v (%v)", ended, holder.Err())
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			var c locktest.Checker
			for _, h := range holds {
				// Second server life: its counter started again. Its holds
				// began after the kill (none can while the server is down),
				// and some may before Restart returned: waiters retry as
				// soon as the new server accepts connections.
				if tc.delayed && h.Start.After(killed) {
					h.Token |= 1 << 32
				}
				c.Record(h)
			}
			n := checkNoViolations(t, &c, nil)
			if n != waiters+1 {
				t.Errorf("%d holds; want %d (everyone acquires)", n, waiters+1)
			}
			t.Logf("server down %v; %d holds checked, everyone acquired", restarted.Sub(killed).Round(time.Millisecond), n)
		})
	}
}
