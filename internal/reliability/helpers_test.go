package reliability_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/backends/locktest"
	"github.com/ctxlock/ctxlock/internal/chaostest"
)

func TestMain(m *testing.M) {
	redis.SetLogger(quiet{}) // faults are deliberate here: no dial-failure noise
	if os.Getenv(helperEnv) != "" {
		// A re-executed child (TestHelperProcess) is SIGKILLed by its parent:
		// no leak check there.
		os.Exit(m.Run())
	}
	goleak.VerifyTestMain(m)
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// Timing of the Redis scenarios. The drift factor is generous so that
// scheduling noise on a small -race machine cannot make a holder observe its
// expiry after another owner acquired (see RELIABILITY.md).
const (
	ttl         = time.Second
	drift       = 0.15
	netTimeout  = 250 * time.Millisecond // go-redis dial/read/write/pool timeouts
	waitLong    = 20 * time.Second       // bound on anything that should happen
	acquireWait = 250 * time.Millisecond // one acquire attempt
)

func lockOpts(extra ...ctxlock.LockOption) []ctxlock.LockOption {
	return append([]ctxlock.LockOption{
		ctxlock.WithTTL(ttl),
		ctxlock.WithDriftFactor(drift),
		ctxlock.WithAcquireTimeout(acquireWait),
	}, extra...)
}

// clientOptions are go-redis options with short timeouts and context
// deadlines honoured.
func clientOptions(addr string) *redis.Options {
	o := &redis.Options{
		Addr:                  addr,
		DialTimeout:           netTimeout,
		ReadTimeout:           netTimeout,
		WriteTimeout:          netTimeout,
		PoolTimeout:           netTimeout,
		ContextTimeoutEnabled: true,
		DialerRetries:         1,
		MaxRetries:            -1,
	}
	return o
}

// redisManager is a Manager on its own go-redis client and goredis Backend.
type redisManager struct {
	*ctxlock.Manager
	backend *goredis.Backend
	client  *redis.Client
}

// newRedisManager connects to addr (a server or a fault proxy). Everything is
// closed when the test ends, the Manager first.
func newRedisManager(t testing.TB, addr string, opts ...ctxlock.ManagerOption) *redisManager {
	t.Helper()
	c := redis.NewClient(clientOptions(addr))
	b := goredis.New(c, append(clockTokenOptions(), goredis.WithHealthCheckInterval(netTimeout), goredis.WithSubscribeWait(100*time.Millisecond))...)
	m := ctxlock.NewManager(b, opts...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_ = m.Close(ctx) // may abandon releases when the test left a fault in place
		_ = b.Close()
		_ = c.Close()
	})
	return &redisManager{Manager: m, backend: b, client: c}
}

// holdsAfter counts the holds that started after from, and returns the
// highest token of all (with -chaos.clocktokens, about the clock in µs).
func holdsAfter(c *locktest.Checker, from time.Time) (n int, maxToken uint64) {
	for _, h := range c.Holds() {
		if h.Start.After(from) {
			n++
		}
		maxToken = max(maxToken, h.Token)
	}
	return n, maxToken
}

// clockTokenOptions is goredis.WithClockTokens when -chaos.clocktokens is
// set, else nothing.
func clockTokenOptions() []goredis.Option {
	if *chaosClockTokens {
		return []goredis.Option{goredis.WithClockTokens(time.Hour)}
	}
	return nil
}

// inspectScript reads a lock's fencing counter and remaining TTL atomically.
var inspectScript = redis.NewScript(`return {redis.call('GET', KEYS[2]), redis.call('PTTL', KEYS[1])}`)

// leaseState is what the server says about a key, read directly.
type leaseState struct {
	fence      uint64        // the key's fencing counter (last token issued)
	pttl       time.Duration // remaining TTL; <0 when no lease
	sent, recv time.Time     // when the request was sent and the reply came
}

// lapseLow and lapseHigh bound the instant the lease lapses on the server.
func (s leaseState) lapseLow() time.Time  { return s.sent.Add(s.pttl - time.Millisecond) }
func (s leaseState) lapseHigh() time.Time { return s.recv.Add(s.pttl + time.Millisecond) }

// direct is a client that bypasses the fault proxies (a *redis.Client, or a
// *redis.ClusterClient in Cluster mode).
func inspect(ctx context.Context, direct redis.Scripter, b *goredis.Backend, key string) (leaseState, error) {
	lk, fk, _ := b.Keys(key)
	var st leaseState
	st.sent = time.Now()
	res, err := inspectScript.Run(ctx, direct, []string{lk, fk}).Slice()
	st.recv = time.Now()
	if err != nil {
		return st, err
	}
	if len(res) != 2 {
		return st, fmt.Errorf("inspect: reply %v", res)
	}
	if s, ok := res[0].(string); ok {
		_, _ = fmt.Sscan(s, &st.fence)
	}
	n, _ := res[1].(int64)
	if n < 0 {
		st.pttl = -1
	} else {
		st.pttl = time.Duration(n) * time.Millisecond
	}
	return st, nil
}

// stats is the tests' tally of counters and duration samples.
type stats = chaostest.Stats

func checkNoViolations(t *testing.T, c *locktest.Checker, tr *trail) int {
	t.Helper()
	n := c.Check(t)
	if v := c.Violations(); len(v) > 0 {
		t.Errorf("%d violations in %d holds", len(v), n)
		for _, h := range c.Holds() {
			t.Logf("hold %s on %s token %d [%s .. %s]", h.Owner, h.Key, h.Token, clock(h.Start), clock(h.End))
		}
		tr.explain(t, c.Holds())
	}
	return n
}

// marginProbes measures the Liveness B margin of holds that expired: how
// long before the server-side TTL the expiry channel closed, where the
// server still has the lease. Each probe reads the key's fence and PTTL
// through direct (past the fault proxies), off the contenders' goroutines;
// wg waits for them.
type marginProbes struct {
	direct  redis.Scripter
	backend *goredis.Backend
	tally   *stats
	wg      sync.WaitGroup
}

func (p *marginProbes) probe(key string, token uint64, expiredAt time.Time) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), netTimeout)
		defer cancel()
		st, err := inspect(ctx, p.direct, p.backend, key)
		switch {
		case err != nil:
			p.tally.Add("margin unmeasured (server frozen)", 1)
		case st.fence != token:
			// Someone acquired after us: Redis ordered it after our lapse.
			p.tally.Add("margin unmeasured (taken over)", 1)
		case st.pttl <= 0:
			// Released by our own post-expiry release, or lapsed.
			p.tally.Add("margin unmeasured (gone)", 1)
		default:
			p.tally.Sample("margin", st.lapseLow().Sub(expiredAt))
		}
	}()
}

// closeCleanly closes m, then b, after the faults: both must return (within
// 5s each) and without error, nothing left abandoned. The time both took
// goes to tally's "close" sample.
func closeCleanly(t *testing.T, name string, m *ctxlock.Manager, b *goredis.Backend, tally *stats) {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := m.Close(ctx)
	cancel()
	if err != nil {
		t.Errorf("%s: Manager.Close after the faults: %v (%v)", name, err, time.Since(start))
	}
	done := make(chan error, 1)
	go func() { done <- b.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s: Backend.Close: %v", name, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: Backend.Close has not returned after 5s", name)
	}
	tally.Sample("close", time.Since(start))
}
