package reliability_test

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/backends/locktest"
	"github.com/ctxlock/ctxlock/internal/chaostest"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

var (
	sentinelChaosDuration  = flag.Duration("chaos.sentinel.duration", 10*time.Second, "how long TestChaosSentinel injects faults")
	sentinelChaosManagers  = flag.Int("chaos.sentinel.managers", 3, "Managers (each on its own failover client) in TestChaosSentinel")
	sentinelChaosWorkers   = flag.Int("chaos.sentinel.workers", 2, "contending goroutines per Manager in TestChaosSentinel")
	sentinelChaosKeys      = flag.Int("chaos.sentinel.keys", 2, "keys contended in TestChaosSentinel")
	sentinelChaosSentinels = flag.Int("chaos.sentinel.sentinels", 3, "Sentinel processes in TestChaosSentinel (quorum: a majority)")
)

// Timing of TestChaosSentinel. A failover (down-after-milliseconds 1s, a
// random delay of up to 1s, the election, the promotion, the clients'
// switch) takes 2-4s: with a 4s TTL a hold refreshed shortly before the
// master fails may live through it (two thirds of the TTL, less the drift,
// are left after a refresh), and a lease whose release was lost in a
// failover (releases are not acknowledged) lapses soon enough for the
// liveness bound.
const (
	sentinelTTL       = 4 * time.Second
	sentinelReplicas  = 2 // with WithReplicaAcks(1, ...): a failover keeps a replica to acknowledge
	sentinelBriefStop = 500 * time.Millisecond
	// The liveness bound once the faults stop and a master has a replica:
	// a contender may queue behind two long holds (sentinelTTL*3/2 each,
	// one in 17) taken just before, and a lease whose release a failover
	// lost lapses at its TTL, then the queue's dead first waiter at its
	// keep (goredis.DefaultWaiterKeep). Seen: up to 9s.
	sentinelProgress   = 2*(sentinelTTL+sentinelTTL/2) + sentinelTTL + goredis.DefaultWaiterKeep + 3*time.Second
	sentinelFailoverIn = 30 * time.Second // bound on a failover and on the servers' recovery
)

// TestChaosSentinel runs contenders in several Managers, each on its own
// go-redis failover client with WithReplicaAcks(1, 50ms), against a master
// with two replicas (min-replicas-to-write 1) watched by three sentinels,
// while faults are injected on a seeded schedule: brief SIGSTOPs of the
// master (under down-after-milliseconds, so no failover) or of a replica,
// and failovers, each only once the servers are healthy again (every node
// a replica in sync, every sentinel agreeing): SIGKILL of the master
// (restarted once the failover is done, as a replica of the new master or
// with its old configuration, for Sentinel to turn into one), SIGSTOP of
// the master until the failover is done, and SENTINEL FAILOVER (planned).
//
// What is checked is what the goredis docs promise (doc.go, Redis
// Sentinel; WithReplicaAcks):
//
//   - No overlap, and increasing fencing tokens, among the holds the
//     library counts as safe. A master that dies or freezes (a single
//     failure: with one acknowledgement of two replicas, Sentinel promotes
//     the replica with the most data) loses no acknowledged lease or
//     refresh, so holds across a SIGKILL or SIGSTOP failover are all
//     checked. A planned failover is not covered: the old master keeps
//     running and keeps its other replica until Sentinel moves it, so a
//     lease or refresh acknowledged there in that window is on no server
//     the new master keeps ("someone else may have taken the key on the
//     new master meanwhile"). Holds that were held at any moment from the
//     SENTINEL FAILOVER until the failover is done (plus a second) are
//     left out of the check, and reported separately.
//   - Liveness once the faults stop and a master has a replica online:
//     every contender locks again within sentinelProgress (22s).
//   - Every Manager's and Backend's Close returns, cleanly; no goroutine is
//     leaked (TestMain).
//   - No failover happened but those injected (a brief SIGSTOP that Sentinel
//     took for a failure would leave an unchecked window).
func TestChaosSentinel(t *testing.T) {
	seed := *chaosSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("chaos sentinel: seed %d (rerun with -chaos.seed=%d), duration %v, %d managers x %d workers on %d keys, %d sentinels",
		seed, seed, *sentinelChaosDuration, *sentinelChaosManagers, *sentinelChaosWorkers, *sentinelChaosKeys, *sentinelChaosSentinels)
	sen := redistest.StartSentinel(t, sentinelReplicas, *sentinelChaosSentinels,
		redistest.WithArgs("--min-replicas-to-write", "1"))
	sen.WaitAcks(t)

	// Every failover Sentinel announces, to tell injected ones from others.
	switches := watchSwitches(t, sen)

	var (
		tr    trail
		ms    []*sentinelManager
		tally stats
	)
	for i := 0; i < *sentinelChaosManagers; i++ {
		ms = append(ms, newSentinelManager(t, sen, tr.option(fmt.Sprintf("m%d", i))))
	}
	direct := sen.Client(t)
	probes := &marginProbes{direct: direct, backend: ms[0].backend, tally: &tally}

	var (
		all     locktest.Checker // every hold; only the promised ones are checked
		faults  stats
		planned windows // planned failovers: holds held then are not promised
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	progress := chaostest.NewCalmProgress()
	var wg sync.WaitGroup
	for i, m := range ms {
		for j := 0; j < *sentinelChaosWorkers; j++ {
			who := fmt.Sprintf("m%d/g%d", i, j)
			key := fmt.Sprintf("schaos-%d", (i**sentinelChaosWorkers+j)%*sentinelChaosKeys)
			held := progress.Add(who + " on " + key)
			wg.Add(1)
			go func() {
				defer wg.Done()
				chaosWorkerTTL(ctx, m, key, who, sentinelTTL, &all, &tally, probes.probe, held)
			}()
		}
	}

	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo)+1)) }
	// The kinds of failover in a seeded order, so that two of them differ.
	kinds := []string{"kill", "stop", "planned"}
	rng.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	failovers := 0
	master := sen.Master(t)
	injected := func(what string, f func() error) bool {
		if err := f(); err != nil {
			t.Errorf("%s: %v", what, err)
			return false
		}
		return true
	}
	deadline := time.Now().Add(*sentinelChaosDuration)
	nextFailover := time.Now().Add(between(time.Second, 2*time.Second))
faults:
	for time.Now().Before(deadline) {
		time.Sleep(between(200*time.Millisecond, 700*time.Millisecond)) // calm between faults
		if time.Now().After(nextFailover) && healthy(sen) {
			kind := kinds[failovers%len(kinds)]
			old := master
			t.Logf("%s: failover (%s) of %s", clock(time.Now()), kind, old.Addr())
			switch kind {
			case "kill":
				old.Kill()
				down := time.Now()
				if !injected("failover after SIGKILL", func() (err error) { master, err = waitFailover(sen, old); return err }) {
					break faults
				}
				time.Sleep(between(0, time.Second)) // down a while longer
				if rng.IntN(2) == 0 {
					sen.RestartAsReplica(old, master)
					faults.Add("kill+restart as replica", 1)
				} else {
					old.Restart() // with its old configuration: Sentinel turns it into a replica
					faults.Add("kill+restart", 1)
				}
				tally.Sample("failover (kill)", time.Since(down))
			case "stop":
				old.Stop()
				down := time.Now()
				ok := injected("failover after SIGSTOP", func() (err error) { master, err = waitFailover(sen, old); return err })
				tally.Sample("failover (stop)", time.Since(down))
				time.Sleep(between(0, 500*time.Millisecond))
				old.Cont()
				if !ok {
					break faults
				}
				faults.Add("stop until failover", 1)
			case "planned":
				from := time.Now()
				planned.open(from)
				master = sen.Failover(t)
				// Leases and refreshes the old master's remaining replica
				// acknowledged until it moved are gone; the holds that
				// relied on them end by their validity deadline.
				planned.close(time.Now().Add(time.Second))
				tally.Sample("failover (planned)", time.Since(from))
				faults.Add("planned failover", 1)
			}
			failovers++
			nextFailover = time.Now().Add(between(time.Second, 3*time.Second))
			continue
		}
		switch k := rng.IntN(10); {
		case k < 7:
			master.Stop()
			from := time.Now()
			faults.Add("brief sigstop of the master", 1)
			time.Sleep(between(100*time.Millisecond, sentinelBriefStop))
			master.Cont()
			t.Logf("%s: master %s stopped for %v", clock(from), master.Addr(), time.Since(from))
		default:
			var replicas []*redistest.Server
			for _, s := range sen.Servers() {
				if s != master {
					replicas = append(replicas, s)
				}
			}
			r := replicas[rng.IntN(len(replicas))]
			r.Stop()
			faults.Add("sigstop of a replica", 1)
			time.Sleep(between(100*time.Millisecond, 1500*time.Millisecond))
			r.Cont()
		}
	}

	// Calm: a master with a replica, so that leases can be acknowledged.
	wctx, wcancel := context.WithTimeout(context.Background(), sentinelFailoverIn)
	if _, err := sen.WaitMaster(wctx, 1); err != nil {
		t.Errorf("after the faults: %v", err)
	}
	wcancel()
	calm := time.Now()
	progress.Start(calm)
	stuck := progress.Wait(sentinelProgress)
	cancel()
	wg.Wait()
	probes.wg.Wait()
	if stuck != nil {
		t.Errorf("liveness: %d contenders did not lock within %v after the faults stopped and a master had a replica: %v",
			len(stuck), sentinelProgress, stuck)
		for i, m := range ms {
			hctx, hcancel := context.WithTimeout(context.Background(), time.Second)
			conds, err := m.Health(hctx)
			hcancel()
			t.Logf("m%d Health: %v, %v", i, conds, err)
		}
	}

	for i, m := range ms {
		closeCleanly(t, fmt.Sprintf("m%d", i), m.Manager, m.backend, &tally)
	}

	// A failover Sentinel started on its own (a brief SIGSTOP taken for a
	// failure on a loaded machine) is one of the failure kind, whose holds
	// are promised and checked like the injected ones: worth a note, not a
	// failure.
	if got := switches.stop(); got != failovers {
		t.Logf("Sentinel announced %d failovers, %d were injected (a brief SIGSTOP taken for a failure?): %q", got, failovers, switches.msgs)
	}

	var promised locktest.Checker
	unpromised := 0
	for _, h := range all.Holds() {
		if planned.overlaps(h) {
			unpromised++
			continue
		}
		promised.Record(h)
	}
	n := checkNoViolations(t, &promised, &tr)
	margins := tally.Samples("margin")
	for _, m := range margins {
		if m <= 0 {
			t.Errorf("Liveness B: an expiry channel closed %v after the server-side TTL ended", -m)
		}
	}
	waits := progress.LockWaits()
	t.Logf("chaos sentinel result: seed %d, %v: failovers %d, faults %d (%s); holds checked %d, violations %d; "+
		"holds across a planned failover (not checked) %d, violations among all holds %d; %s; "+
		"failover kill %s, stop %s, planned %s; first lock after the calm %s; Close %s; Liveness B margin %s",
		seed, *sentinelChaosDuration, failovers, faults.Total(), faults.String(), n, len(promised.Violations()),
		unpromised, len(all.Violations()), tally.String(),
		chaostest.Summary(tally.Samples("failover (kill)")), chaostest.Summary(tally.Samples("failover (stop)")), chaostest.Summary(tally.Samples("failover (planned)")),
		chaostest.Summary(waits), chaostest.Summary(tally.Samples("close")), chaostest.Summary(margins))
	for _, v := range all.Violations() {
		t.Logf("not promised: %s", v)
	}
	for _, p := range overlapping(all.Holds()) {
		t.Logf("not promised: %s (token %d) [%s .. %s] and %s (token %d) [%s .. %s]; planned failovers %s",
			p[0].Owner, p[0].Token, clock(p[0].Start), clock(p[0].End), p[1].Owner, p[1].Token, clock(p[1].Start), clock(p[1].End), planned.String())
	}
}

// healthy reports whether the servers are ready for another failover: every
// node a replica in sync with the master all sentinels name.
func healthy(sen *redistest.Sentinel) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := sen.WaitHealthy(ctx)
	return err == nil
}

func waitFailover(sen *redistest.Sentinel, old *redistest.Server) (*redistest.Server, error) {
	ctx, cancel := context.WithTimeout(context.Background(), sentinelFailoverIn)
	defer cancel()
	return sen.WaitFailover(ctx, old)
}

// windows are spans of time; a hold that overlaps one is not promised.
type windows struct {
	mu   sync.Mutex
	from []time.Time
	to   []time.Time // zero while open
}

func (w *windows) open(at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.from = append(w.from, at)
	w.to = append(w.to, time.Time{})
}

func (w *windows) close(at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.to[len(w.to)-1] = at
}

func (w *windows) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := ""
	for i, from := range w.from {
		out += fmt.Sprintf("[%s .. %s] ", clock(from), clock(w.to[i]))
	}
	return out
}

func (w *windows) overlaps(h locktest.Hold) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, from := range w.from {
		to := w.to[i]
		if h.End.After(from) && (to.IsZero() || h.Start.Before(to)) {
			return true
		}
	}
	return false
}

// switchWatch counts the +switch-master events of one sentinel.
type switchWatch struct {
	pubsub *redis.PubSub
	done   chan struct{}
	n      atomic.Int64
	mu     sync.Mutex
	msgs   []string
}

func watchSwitches(t *testing.T, sen *redistest.Sentinel) *switchWatch {
	t.Helper()
	sc := redis.NewSentinelClient(redistest.ClientOptions(sen.SentinelAddrs()[0]))
	t.Cleanup(func() { _ = sc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w := &switchWatch{pubsub: sc.Subscribe(ctx, "+switch-master"), done: make(chan struct{})}
	if _, err := w.pubsub.Receive(ctx); err != nil { // the confirmation
		t.Fatalf("subscribe to the sentinel's +switch-master: %v", err)
	}
	ch := w.pubsub.Channel()
	go func() {
		defer close(w.done)
		for msg := range ch {
			w.n.Add(1)
			w.mu.Lock()
			w.msgs = append(w.msgs, clock(time.Now())+" "+msg.Payload)
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() { _ = w.stop() })
	return w
}

// stop ends the watch and returns the count.
func (w *switchWatch) stop() int {
	_ = w.pubsub.Close()
	<-w.done
	return int(w.n.Load())
}

// sentinelManager is a Manager on its own failover client, with replica
// acknowledgements.
type sentinelManager struct {
	*ctxlock.Manager
	backend *goredis.Backend
	client  *redis.Client
}

func newSentinelManager(t testing.TB, sen *redistest.Sentinel, opts ...ctxlock.ManagerOption) *sentinelManager {
	t.Helper()
	c := sen.Client(t, func(o *redis.FailoverOptions) {
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = netTimeout, netTimeout, netTimeout, netTimeout
	})
	// One replica of two acknowledges, so that a failover keeps one to do it;
	// the acquire timeout (acquireWait, 250ms) leaves room for Redis to
	// report a shortfall (timeout + up to 100ms), as WithReplicaAcks asks.
	b := goredis.New(c,
		goredis.WithReplicaAcks(1, 50*time.Millisecond),
		goredis.WithHealthCheckInterval(netTimeout),
		goredis.WithSubscribeWait(100*time.Millisecond))
	m := ctxlock.NewManager(b, opts...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_ = m.Close(ctx) // idempotent: the test closes them itself first
		_ = b.Close()
	})
	return &sentinelManager{Manager: m, backend: b, client: c}
}
