package reliability_test

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/locktest"
	"github.com/ctxlock/ctxlock/internal/chaostest"
	"github.com/ctxlock/ctxlock/internal/faultproxy"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

var (
	chaosDuration = flag.Duration("chaos.duration", 20*time.Second, "how long TestChaos injects faults")
	chaosSeed     = flag.Uint64("chaos.seed", 0, "seed of TestChaos's fault schedule (0: random, printed)")
	chaosManagers = flag.Int("chaos.managers", 3, "Managers (each on its own client and fault proxy) in TestChaos")
	chaosWorkers  = flag.Int("chaos.workers", 3, "contending goroutines per Manager in TestChaos")
	chaosKeys     = flag.Int("chaos.keys", 2, "keys contended in TestChaos")
	// chaosClockTokens runs every goredis Backend of the package's tests
	// (newRedisManager, and TestChaosRedlock's nodes) with
	// goredis.WithClockTokens, whose tokens the checker then sees.
	chaosClockTokens = flag.Bool("chaos.clocktokens", false, "goredis.WithClockTokens(time.Hour) on the Backends of TestChaos, TestChaosRedlock and the scenarios")
)

// TestChaos runs contenders in several Managers, each Manager on its own
// connection through a fault proxy, while faults are injected at random:
// delays, blackholes and resets of one Manager's connection, and brief
// SIGSTOPs of the server. Every hold is recorded; the checker must find no
// overlap and no fencing token that does not increase. When a hold expires,
// the Liveness B margin (how long before the server-side TTL the expiry
// channel closed) is measured where the server still has the lease.
func TestChaos(t *testing.T) {
	seed := *chaosSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("chaos: seed %d (rerun with -chaos.seed=%d), duration %v, %d managers x %d workers on %d keys",
		seed, seed, *chaosDuration, *chaosManagers, *chaosWorkers, *chaosKeys)
	srv := redistest.StartServer(t)
	direct := srv.Client(t)
	var (
		proxies []*faultproxy.Proxy
		ms      []*redisManager
		tr      trail
	)
	for i := 0; i < *chaosManagers; i++ {
		px := faultproxy.Start(t, srv.Addr())
		proxies = append(proxies, px)
		ms = append(ms, newRedisManager(t, px.Addr(), tr.option(fmt.Sprintf("m%d", i))))
	}
	var (
		checker locktest.Checker
		tally   stats
		faults  stats
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	probes := &marginProbes{direct: direct, backend: ms[0].backend, tally: &tally}

	var wg sync.WaitGroup
	for i, m := range ms {
		for j := 0; j < *chaosWorkers; j++ {
			who := fmt.Sprintf("m%d/g%d", i, j)
			key := fmt.Sprintf("chaos-%d", (i**chaosWorkers+j)%*chaosKeys)
			wg.Add(1)
			go func() {
				defer wg.Done()
				chaosWorker(ctx, m, key, who, &checker, &tally, probes.probe, nil)
			}()
		}
	}

	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo)+1)) }
	deadline := time.Now().Add(*chaosDuration)
	for time.Now().Before(deadline) {
		time.Sleep(between(100*time.Millisecond, 600*time.Millisecond)) // calm between faults
		px := proxies[rng.IntN(len(proxies))]
		switch k := rng.IntN(10); {
		case k < 3:
			up, down := between(0, 200*time.Millisecond), between(0, 200*time.Millisecond)
			px.Delay(up, down)
			faults.Add("delay", 1)
			time.Sleep(between(300*time.Millisecond, 1500*time.Millisecond))
		case k < 5:
			px.Blackhole()
			faults.Add("blackhole", 1)
			time.Sleep(between(200*time.Millisecond, 1500*time.Millisecond))
		case k < 7:
			px.Reset()
			faults.Add("reset", 1)
			time.Sleep(between(50*time.Millisecond, 500*time.Millisecond))
		case k < 9:
			srv.Stop()
			faults.Add("sigstop", 1)
			time.Sleep(between(100*time.Millisecond, 1300*time.Millisecond))
			srv.Cont()
		default:
			// Two Managers cut at once.
			other := proxies[rng.IntN(len(proxies))]
			px.Blackhole()
			other.Reset()
			faults.Add("blackhole+reset", 1)
			time.Sleep(between(200*time.Millisecond, 1200*time.Millisecond))
			other.Pass()
		}
		px.Pass()
	}
	// Calm at the end: everyone must make progress again.
	calmFrom := time.Now()
	time.Sleep(2 * ttl)
	cancel()
	wg.Wait()
	probes.wg.Wait()

	calm, maxToken := holdsAfter(&checker, calmFrom)
	n := checkNoViolations(t, &checker, &tr)
	if calm == 0 {
		t.Errorf("no hold in the calm period after the faults")
	}
	overlaps := len(checker.Violations())
	margins := tally.Samples("margin")
	for _, m := range margins {
		if m <= 0 {
			t.Errorf("Liveness B: an expiry channel closed %v after the server-side TTL ended", -m)
		}
	}
	t.Logf("chaos result: seed %d, %v: faults injected %d (%s); holds checked %d (%d in the final calm, highest token %d); violations %d; %s; Liveness B margin %s",
		seed, *chaosDuration, faults.Total(), faults.String(), n, calm, maxToken, overlaps, tally.String(), chaostest.Summary(margins))
}

func chaosWorker(ctx context.Context, m ctxlock.LockManager, key, who string, c *locktest.Checker, tally *stats,
	probe func(key string, token uint64, at time.Time), held func(locktest.Hold)) {
	chaosWorkerTTL(ctx, m, key, who, ttl, c, tally, probe, held)
}

// chaosWorkerTTL is chaosWorker with holdTTL as the locks' TTL.
func chaosWorkerTTL(ctx context.Context, m ctxlock.LockManager, key, who string, holdTTL time.Duration, c *locktest.Checker, tally *stats,
	probe func(key string, token uint64, at time.Time), held func(locktest.Hold)) {
	l := m.NewLock(key, lockOpts(ctxlock.WithTTL(holdTTL))...)
	for i := 0; ctx.Err() == nil; i++ {
		actx, cancel := context.WithTimeout(ctx, 3*holdTTL)
		exp, err := l.Lock(actx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				tally.Add("lock timeouts", 1)
			}
			continue
		}
		start := time.Now()
		token := l.Token()
		if token == 0 {
			tally.Add("ended at once", 1)
			continue
		}
		// Mostly short holds, sometimes one longer than the TTL (refreshed).
		d := time.Duration(i%10+1) * 3 * time.Millisecond
		if i%17 == 0 {
			d = holdTTL + holdTTL/2
		}
		h, ended := chaostest.HoldFor(l, exp, who, start, token, d)
		c.Record(h)
		tally.Add("holds", 1)
		if held != nil {
			held(h)
		}
		if ended {
			r := chaostest.Reason(l.Err())
			tally.Add("ended "+r, 1)
			if r == "expired" && probe != nil {
				probe(key, token, h.End)
			}
		}
	}
}
