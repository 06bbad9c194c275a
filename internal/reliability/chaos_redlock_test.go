package reliability_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/locktest"
	"github.com/ctxlock/ctxlock/backends/redlock"
	"github.com/ctxlock/ctxlock/internal/faultproxy"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// TestChaosRedlock is TestChaos on the Redlock backend: five independent
// nodes, each behind one fault proxy that all Managers share, so a fault cuts
// a node from everyone (a node partition), besides SIGSTOPs of nodes. Faults
// sometimes hit two nodes at once (a quorum of 3 survives) and rarely three.
func TestChaosRedlock(t *testing.T) {
	seed := *chaosSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("chaos redlock: seed %d (rerun with -chaos.seed=%d), duration %v", seed, seed, *chaosDuration)
	nodes := redistest.StartNodes(t, 5)
	var proxies []*faultproxy.Proxy
	for _, n := range nodes {
		proxies = append(proxies, faultproxy.Start(t, n.Addr()))
	}
	var (
		ms []*ctxlock.Manager
		tr trail
	)
	for i := 0; i < *chaosManagers; i++ {
		var clients []redis.UniversalClient
		for _, px := range proxies {
			clients = append(clients, redis.NewClient(clientOptions(px.Addr())))
		}
		b, err := redlock.New(clients, redlock.WithNodeOptions(clockTokenOptions()...))
		if err != nil {
			t.Fatal(err)
		}
		m := ctxlock.NewManager(b, tr.option(fmt.Sprintf("m%d", i)))
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			_ = m.Close(ctx)
			_ = b.Close()
			for _, c := range clients {
				_ = c.Close()
			}
		})
		ms = append(ms, m)
	}
	var (
		checker locktest.Checker
		tally   stats
		faults  stats
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i, m := range ms {
		for j := 0; j < *chaosWorkers; j++ {
			who := fmt.Sprintf("m%d/g%d", i, j)
			key := fmt.Sprintf("chaos-%d", (i**chaosWorkers+j)%*chaosKeys)
			wg.Add(1)
			go func() {
				defer wg.Done()
				chaosWorker(ctx, m, key, who, &checker, &tally, nil, nil)
			}()
		}
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo)+1)) }
	deadline := time.Now().Add(*chaosDuration)
	for time.Now().Before(deadline) {
		time.Sleep(between(100*time.Millisecond, 600*time.Millisecond)) // calm between faults
		width := 1
		switch r := rng.IntN(10); {
		case r >= 9:
			width = 3
		case r >= 6:
			width = 2
		}
		hit := rng.Perm(len(nodes))[:width]
		kind := rng.IntN(4)
		for _, i := range hit {
			switch kind {
			case 0:
				proxies[i].Delay(between(0, 200*time.Millisecond), between(0, 200*time.Millisecond))
			case 1:
				proxies[i].Blackhole()
			case 2:
				proxies[i].Reset()
			case 3:
				nodes[i].Stop()
			}
		}
		faults.Add(fmt.Sprintf("%s x%d", []string{"delay", "blackhole", "reset", "sigstop"}[kind], width), 1)
		time.Sleep(between(100*time.Millisecond, 1300*time.Millisecond))
		for _, i := range hit {
			if kind == 3 {
				nodes[i].Cont()
			}
			proxies[i].Pass()
		}
	}
	calmFrom := time.Now()
	time.Sleep(2 * ttl)
	cancel()
	wg.Wait()
	calm, maxToken := holdsAfter(&checker, calmFrom)
	n := checkNoViolations(t, &checker, &tr)
	if calm == 0 {
		t.Errorf("no hold in the calm period after the faults")
	}
	t.Logf("chaos redlock result: seed %d, %v: faults injected %d (%s); holds checked %d (%d in the final calm, highest token %d); violations %d; %s",
		seed, *chaosDuration, faults.Total(), faults.String(), n, calm, maxToken, len(checker.Violations()), tally.String())
}
