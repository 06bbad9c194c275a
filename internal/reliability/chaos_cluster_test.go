package reliability_test

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
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

var (
	clusterChaosDuration = flag.Duration("chaos.cluster.duration", 8*time.Second, "how long TestChaosCluster injects faults")
	clusterChaosManagers = flag.Int("chaos.cluster.managers", 4, "Managers (each on its own client and fault proxies) in TestChaosCluster")
	clusterChaosWorkers  = flag.Int("chaos.cluster.workers", 4, "contending goroutines per Manager in TestChaosCluster")
	clusterChaosKeys     = flag.Int("chaos.cluster.keys", 1, "keys per master for each of TestChaosCluster's two groups of Managers")
)

// clusterMasters is the size of TestChaosCluster's Redis Cluster.
const clusterMasters = 3

// TestChaosCluster is TestChaos on a Redis Cluster of three masters (no
// replicas, so no failover: the checked properties are those the goredis
// backend promises for a single master per slot). Each Manager reaches every
// node through a fault proxy of its own (the go-redis ClusterOptions.Dialer
// maps a node's address to that Manager's proxy in front of it), so that a
// fault cuts one Manager from one master, or from all of them, while the
// others go on. Besides those, a master is SIGSTOPped briefly (well under the
// cluster-node-timeout of 1s, so the cluster does not mark it failed).
//
// Keys spread over the three masters, so each Manager's Backend has one
// subscription (hub) and one batcher lane per master. The Managers differ:
// even ones grant hand-offs, odd ones only hint (WithWaiterHints), and every
// other pair also wakes on lease expiry (WithExpiryNotifications; the
// servers have notify-keyspace-events Ex). Granting and hinting Managers
// contend for different keys (see groups below); several goroutines of one
// Manager share some keys.
//
// Checked: no overlap and increasing fencing tokens per key; the Liveness B
// margin of every hold that expired (where measurable); once the faults stop
// and the cluster is healthy, every contender acquires again within a bound;
// every Manager's and Backend's Close returns (and no goroutine is leaked:
// TestMain).
func TestChaosCluster(t *testing.T) {
	seed := *chaosSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("chaos cluster: seed %d (rerun with -chaos.seed=%d), duration %v, %d managers x %d workers on %d keys",
		seed, seed, *clusterChaosDuration, *clusterChaosManagers, *clusterChaosWorkers, 2**clusterChaosKeys*clusterMasters)
	cl := redistest.StartCluster(t, clusterMasters, redistest.WithArgs("--notify-keyspace-events", "Ex"))
	nodes := cl.Nodes()
	direct := cl.Client(t)

	var (
		tr      trail
		ms      []*clusterManager
		proxies [][]*faultproxy.Proxy // [manager][node]
		tally   stats
	)
	for i := 0; i < *clusterChaosManagers; i++ {
		var pxs []*faultproxy.Proxy
		for _, n := range nodes {
			pxs = append(pxs, faultproxy.Start(t, n.Addr()))
		}
		proxies = append(proxies, pxs)
		// Even Managers grant hand-offs, odd ones only hint
		// (WithWaiterHints); m2 and m3 (then every fourth) also wake on
		// lease expiry.
		var bopts []goredis.Option
		if i%2 == 1 {
			bopts = append(bopts, goredis.WithWaiterHints(0))
		}
		if i%4 >= 2 {
			bopts = append(bopts, goredis.WithExpiryNotifications())
		}
		ms = append(ms, newClusterManager(t, pxs, &tally, bopts, tr.option(fmt.Sprintf("m%d", i))))
	}
	// The keys of group 0 (one per master, then again) are contended by
	// the granting Managers, those of group 1 by the hinting ones: a
	// granting and a hinting Backend ignore each other's waiter queues, so
	// mixed on one key they keep exclusion but not order (a waiter of one
	// kind waits while those of the other kind hand the key on among
	// themselves), which a liveness bound cannot hold them to.
	// TestMixedHintsWaiterNotStarved (goredis) covers the mix.
	keys := keysPerMaster(t, direct, ms[0].backend, nodes, 2**clusterChaosKeys)
	groups := [2][]string{}
	for k, key := range keys {
		groups[k/clusterMasters%2] = append(groups[k/clusterMasters%2], key)
	}

	var (
		checker locktest.Checker
		faults  stats
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Straight to the masters (no proxy).
	probes := &marginProbes{direct: direct, backend: ms[0].backend, tally: &tally}

	// Progress once the faults have stopped and the cluster is healthy.
	progress := chaostest.NewCalmProgress()
	var wg sync.WaitGroup
	for i, m := range ms {
		for j := 0; j < *clusterChaosWorkers; j++ {
			who := fmt.Sprintf("m%d/g%d", i, j)
			group := groups[i%2]
			key := group[((i/2)**clusterChaosWorkers+j)%len(group)]
			held := progress.Add(who + " on " + key)
			wg.Add(1)
			go func() {
				defer wg.Done()
				chaosWorker(ctx, m, key, who, &checker, &tally, probes.probe, held)
			}()
		}
	}

	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo)+1)) }
	link := func() (int, int) { return rng.IntN(len(proxies)), rng.IntN(len(nodes)) }
	deadline := time.Now().Add(*clusterChaosDuration)
	for time.Now().Before(deadline) {
		time.Sleep(between(100*time.Millisecond, 500*time.Millisecond)) // calm between faults
		switch k := rng.IntN(10); {
		case k < 2:
			m, n := link()
			proxies[m][n].Delay(between(0, 200*time.Millisecond), between(0, 200*time.Millisecond))
			faults.Add("delay", 1)
			time.Sleep(between(300*time.Millisecond, 1200*time.Millisecond))
		case k < 4:
			m, n := link()
			proxies[m][n].Blackhole()
			faults.Add("blackhole", 1)
			time.Sleep(between(200*time.Millisecond, 1200*time.Millisecond))
		case k < 5:
			m, n := link()
			proxies[m][n].Reset()
			faults.Add("reset", 1)
			time.Sleep(between(50*time.Millisecond, 400*time.Millisecond))
		case k < 6:
			// One Manager cut from the whole cluster.
			m := rng.IntN(len(proxies))
			for _, px := range proxies[m] {
				px.Blackhole()
			}
			faults.Add("manager cut", 1)
			time.Sleep(between(200*time.Millisecond, 1200*time.Millisecond))
		case k < 9:
			// Shorter than cluster-node-timeout (1s): no FAIL, no
			// CLUSTERDOWN, and with no replicas no failover anyway.
			n := nodes[rng.IntN(len(nodes))]
			n.Stop()
			faults.Add("sigstop", 1)
			time.Sleep(between(100*time.Millisecond, 700*time.Millisecond))
			n.Cont()
		default:
			// A master frozen while one Manager's link to another resets.
			ni := rng.IntN(len(nodes))
			m, n := link()
			if n == ni {
				n = (n + 1) % len(nodes)
			}
			nodes[ni].Stop()
			proxies[m][n].Reset()
			faults.Add("sigstop+reset", 1)
			time.Sleep(between(100*time.Millisecond, 600*time.Millisecond))
			nodes[ni].Cont()
		}
		for _, pxs := range proxies {
			for _, px := range pxs {
				px.Pass()
			}
		}
	}

	// Calm: the cluster healthy again, every contender must lock again
	// within a bound.
	cl.WaitReady(t)
	calm := time.Now()
	progress.Start(calm)
	const progressBound = 10 * time.Second
	stuck := progress.Wait(progressBound)
	cancel()
	wg.Wait()
	probes.wg.Wait()
	if stuck != nil {
		t.Errorf("liveness: %d contenders did not lock within %v after the faults stopped and the cluster was healthy: %v",
			len(stuck), progressBound, stuck)
		perOwner := map[string]int{}
		for _, h := range checker.Holds() {
			if h.Start.After(calm) {
				perOwner[h.Owner+" on "+h.Key]++
			}
		}
		t.Logf("holds after the calm: %v", perOwner)
		for i, m := range ms {
			hctx, hcancel := context.WithTimeout(context.Background(), time.Second)
			conds, err := m.Health(hctx)
			hcancel()
			t.Logf("m%d Health: %v, %v", i, conds, err)
		}
		for _, k := range keys {
			st, err := inspect(context.Background(), direct, ms[0].backend, k)
			t.Logf("key %s: fence %d pttl %v err %v", k, st.fence, st.pttl, err)
		}
	}

	// Every Close returns, and cleanly: nothing is left abandoned.
	for i, m := range ms {
		closeCleanly(t, fmt.Sprintf("m%d", i), m.Manager, m.backend, &tally)
	}
	// The Dialer hook did route every node connection through the proxies.
	for i, pxs := range proxies {
		for n, px := range pxs {
			if px.Stats().Accepted == 0 {
				t.Errorf("m%d: no connection went through the proxy of node %d", i, n)
			}
		}
	}

	n := checkNoViolations(t, &checker, &tr)
	margins := tally.Samples("margin")
	for _, m := range margins {
		if m <= 0 {
			t.Errorf("Liveness B: an expiry channel closed %v after the server-side TTL ended", -m)
		}
	}
	waits := progress.LockWaits()
	t.Logf("chaos cluster result: seed %d, %v: faults injected %d (%s); holds checked %d; violations %d; %s; "+
		"first lock after the calm %s; Close %s; Liveness B margin %s",
		seed, *clusterChaosDuration, faults.Total(), faults.String(), n, len(checker.Violations()), tally.String(),
		chaostest.Summary(waits), chaostest.Summary(tally.Samples("close")), chaostest.Summary(margins))
}

// clusterManager is a Manager on its own ClusterClient, whose connection to
// each node goes through that node's proxy in pxs.
type clusterManager struct {
	*ctxlock.Manager
	backend *goredis.Backend
	client  *redis.ClusterClient
}

func newClusterManager(t testing.TB, pxs []*faultproxy.Proxy, tally *stats, bopts []goredis.Option,
	opts ...ctxlock.ManagerOption) *clusterManager {
	t.Helper()
	via := make(map[string]string, len(pxs)) // node address -> proxy address
	var addrs []string
	for _, px := range pxs {
		via[px.Upstream()] = px.Addr()
		addrs = append(addrs, px.Upstream())
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:                 addrs,
		DialTimeout:           netTimeout,
		ReadTimeout:           netTimeout,
		WriteTimeout:          netTimeout,
		PoolTimeout:           netTimeout,
		ContextTimeoutEnabled: true,
		DialerRetries:         1,
		MaxRetries:            -1,
		MaxRedirects:          3,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			px, ok := via[addr]
			if !ok {
				tally.Add("dials to unknown nodes", 1)
				return nil, fmt.Errorf("chaos cluster: no proxy for node %s", addr)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, px)
		},
	})
	b := goredis.New(c, append([]goredis.Option{
		goredis.WithHealthCheckInterval(netTimeout),
		goredis.WithSubscribeWait(100 * time.Millisecond),
	}, bopts...)...)
	m := ctxlock.NewManager(b, opts...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_ = m.Close(ctx) // idempotent: the test closes them itself first
		_ = b.Close()
		_ = c.Close()
	})
	return &clusterManager{Manager: m, backend: b, client: c}
}

// keysPerMaster returns perMaster lock names for each master, in turn
// (master 0's first, master 1's first, ...), found by asking the cluster
// which master serves each candidate's Redis keys (its hash tag).
func keysPerMaster(t *testing.T, direct *redis.ClusterClient, b *goredis.Backend, nodes []*redistest.Server, perMaster int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	byNode := make([][]string, len(nodes))
	for i, found := 0, 0; found < perMaster*len(nodes); i++ {
		if i > 1000 {
			t.Fatalf("no keys spread over the %d masters", len(nodes))
		}
		name := fmt.Sprintf("cchaos-%d", i)
		lk, _, _ := b.Keys(name)
		node, err := direct.MasterForKey(ctx, lk)
		if err != nil {
			t.Fatal(err)
		}
		for n, srv := range nodes {
			if srv.Addr() == node.Options().Addr && len(byNode[n]) < perMaster {
				byNode[n] = append(byNode[n], name)
				found++
			}
		}
	}
	var keys []string
	for k := 0; k < perMaster; k++ {
		for n := range nodes {
			keys = append(keys, byNode[n][k])
		}
	}
	return keys
}
