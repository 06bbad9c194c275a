package etcd_test

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/etcd"
	"github.com/ctxlock/ctxlock/backends/locktest"
	"github.com/ctxlock/ctxlock/internal/chaostest"
	"github.com/ctxlock/ctxlock/internal/etcdtest"
	"github.com/ctxlock/ctxlock/internal/faultproxy"
)

var (
	chaosDuration = flag.Duration("chaos.duration", 10*time.Second, "how long TestChaos injects faults")
	chaosSeed     = flag.Uint64("chaos.seed", 0, "seed of TestChaos's fault schedule (0: random, logged)")
)

// TestChaos's workload and bounds.
const (
	chaosMembers  = 3
	chaosManagers = 3
	chaosWorkers  = 3 // per Manager
	chaosKeys     = 2

	chaosTTL            = 2 * time.Second // etcd leases count whole seconds
	chaosDrift          = 0.1             // 200ms of the TTL for scheduling noise under -race
	chaosAcquireTimeout = 500 * time.Millisecond
	// chaosLockTimeout is the context of each Lock call; a call must
	// return within it and chaosLockSlack.
	chaosLockTimeout = 3 * chaosTTL
	chaosLockSlack   = 2 * time.Second
	// chaosCalmBound is how long after the faults stop (all members up, a
	// leader elected, every link passing) each worker has to lock again.
	chaosCalmBound = 30 * time.Second
)

// TestChaos runs contenders on three Managers of a three-member etcd
// cluster while a seeded schedule of faults is injected: delays,
// blackholes (some longer than the TTL) and resets of one Manager's link
// to one member or to all of them; SIGSTOP of one member (the leader or a
// follower, sometimes longer than the TTL); SIGKILL of one member and its
// restart. Faults do not overlap, so a quorum of members always remains.
// Each Manager has its own client and Backend, and its client reaches each
// member through a fault proxy of its own.
//
// Workers mostly hold for a few milliseconds, and now and then for longer
// than the TTL (refreshed by the Manager), so that live holds cross the
// faults. Checked: no two holds of a key overlap and tokens increase
// (locktest.Checker); every Lock call returns within its context and some
// slack; once the faults stop, every worker locks again within a bound; the
// Managers close cleanly; no goroutine is leaked (TestMain). When a hold
// expires, a probe past the proxies reads what the server still has of its
// lease (the Liveness B margin, in etcd's whole seconds).
func TestChaos(t *testing.T) {
	seed := *chaosSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("chaos: seed %d (rerun with -chaos.seed=%d), duration %v, %d members, %d managers x %d workers on %d keys, TTL %v",
		seed, seed, *chaosDuration, chaosMembers, chaosManagers, chaosWorkers, chaosKeys, chaosTTL)
	c := etcdtest.StartCluster(t, chaosMembers)
	direct := newClient(t, c.Endpoints()...) // past the proxies: probes

	var trail backendTrail
	var (
		proxies  [][]*faultproxy.Proxy // [manager][member]
		backends []*etcd.Backend
		ms       []*ctxlock.Manager
	)
	for range chaosManagers {
		var pxs []*faultproxy.Proxy
		var eps []string
		for _, s := range c.Members {
			px := faultproxy.Start(t, s.Addr())
			pxs = append(pxs, px)
			eps = append(eps, px.Addr())
		}
		proxies = append(proxies, pxs)
		b := newBackend(t, newChaosClient(t, eps))
		backends = append(backends, b)
		ms = append(ms, newManager(t, &tracedBackend{Backend: b, name: fmt.Sprintf("m%d", len(ms)), trail: &trail}, ctxlock.WithDefaultLockOptions(
			ctxlock.WithTTL(chaosTTL),
			ctxlock.WithDriftFactor(chaosDrift),
			ctxlock.WithAcquireTimeout(chaosAcquireTimeout),
		)))
	}

	var (
		checker  locktest.Checker
		tally    chaostest.Stats
		faults   chaostest.Stats
		wg       sync.WaitGroup
		progress = chaostest.NewCalmProgress()
	)
	probes := &chaosProbes{direct: direct, backend: backends[0], tally: &tally}
	ctx, cancel := context.WithCancel(context.Background())
	// Also on a failure of the schedule (Restart's t.Fatal): nothing
	// outlives the test.
	defer func() {
		cancel()
		wg.Wait()
		probes.wg.Wait()
	}()
	for i, m := range ms {
		for j := range chaosWorkers {
			who := fmt.Sprintf("m%d/g%d", i, j)
			key := fmt.Sprintf("chaos-%d", (i*chaosWorkers+j)%chaosKeys)
			held := progress.Add(who + " on " + key)
			wg.Go(func() {
				chaosEtcdWorker(t, ctx, m, key, who, &checker, &tally, probes.probe, held, progress.Calm)
			})
		}
	}

	began := time.Now()
	logFault := func(format string, args ...any) {
		t.Logf("fault at %v: %s", time.Since(began).Round(time.Millisecond), fmt.Sprintf(format, args...))
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo)+1)) }
	// links picks one Manager's link to one member, or to every member.
	links := func() (string, []*faultproxy.Proxy) {
		m := rng.IntN(len(proxies))
		if rng.IntN(3) == 0 {
			return fmt.Sprintf("m%d to every member", m), proxies[m]
		}
		n := rng.IntN(chaosMembers)
		return fmt.Sprintf("m%d to member %d", m, n), proxies[m][n : n+1]
	}
	// member picks the leader or a follower, as often as each other.
	member := func() (int, string) {
		leader := c.Leader()
		if leader >= 0 && rng.IntN(2) == 0 {
			return leader, "the leader"
		}
		n := rng.IntN(chaosMembers)
		if n == leader {
			n = (n + 1) % chaosMembers
		}
		return n, "a follower"
	}
	deadline := time.Now().Add(*chaosDuration)
	for time.Now().Before(deadline) {
		time.Sleep(between(100*time.Millisecond, 500*time.Millisecond)) // calm between faults
		switch k := rng.IntN(20); {
		case k < 4:
			what, pxs := links()
			up, down := between(0, 200*time.Millisecond), between(0, 200*time.Millisecond)
			for _, px := range pxs {
				px.Delay(up, down)
			}
			d := between(300*time.Millisecond, 1500*time.Millisecond)
			logFault("delay %v up, %v down on %s for %v", up, down, what, d)
			faults.Add("delay", 1)
			time.Sleep(d)
		case k < 7:
			m, n := rng.IntN(len(proxies)), rng.IntN(chaosMembers)
			d := between(200*time.Millisecond, 3*time.Second) // sometimes past the TTL
			logFault("blackhole of m%d to member %d for %v", m, n, d)
			proxies[m][n].Blackhole()
			faults.Add("blackhole", 1)
			time.Sleep(d)
		case k < 9:
			what, pxs := links()
			d := between(50*time.Millisecond, 500*time.Millisecond)
			logFault("reset of %s for %v", what, d)
			for _, px := range pxs {
				px.Reset()
			}
			faults.Add("reset", 1)
			time.Sleep(d)
		case k < 11:
			m := rng.IntN(len(proxies))
			d := between(200*time.Millisecond, 3*time.Second)
			logFault("m%d cut from every member for %v", m, d)
			for _, px := range proxies[m] {
				px.Blackhole()
			}
			faults.Add("manager cut", 1)
			time.Sleep(d)
		case k < 16:
			n, which := member()
			d := between(100*time.Millisecond, 3*time.Second) // sometimes past the TTL
			logFault("SIGSTOP of member %d (%s) for %v", n, which, d)
			c.Members[n].Stop()
			faults.Add("sigstop "+which, 1)
			time.Sleep(d)
			c.Members[n].Cont()
		default:
			n, which := member()
			d := between(0, 2*time.Second)
			logFault("SIGKILL of member %d (%s), restarted after %v", n, which, d)
			c.Members[n].Kill()
			faults.Add("sigkill "+which, 1)
			time.Sleep(d)
			c.Members[n].Restart() // returns once the member is healthy
		}
		for _, pxs := range proxies {
			for _, px := range pxs {
				px.Pass()
			}
		}
	}

	// The calm: every member up and a leader elected; every worker must
	// lock again within a bound.
	pollUntil(t, 30*time.Second, "a leader after the faults", func() bool { return c.Leader() >= 0 })
	calm := time.Now()
	progress.Start(calm)
	stuck := progress.Wait(chaosCalmBound)
	cancel()
	wg.Wait()
	probes.wg.Wait()
	if stuck != nil {
		t.Errorf("liveness: %d workers did not lock within %v of the calm: %v", len(stuck), chaosCalmBound, stuck)
		for i, b := range backends {
			hctx, hcancel := context.WithTimeout(context.Background(), 3*time.Second)
			conds, err := b.Health(hctx)
			hcancel()
			t.Logf("m%d Health: %v, %v", i, conds, err)
		}
	}

	// Every Close returns, and cleanly.
	for i, m := range ms {
		start := time.Now()
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := m.Close(cctx)
		ccancel()
		if err != nil {
			t.Errorf("m%d: Manager.Close after the faults: %v (%v)", i, err, time.Since(start))
		}
		if err := backends[i].Close(); err != nil {
			t.Errorf("m%d: Backend.Close: %v", i, err)
		}
		tally.Sample("close", time.Since(start))
	}
	// Each client did reach each member through its own proxy.
	for i, pxs := range proxies {
		for n, px := range pxs {
			if px.Stats().Accepted == 0 {
				t.Errorf("m%d: no connection through the proxy of member %d", i, n)
			}
		}
	}

	t.Logf("first lock after the calm, per worker: %v", progress)
	n := checker.Check(t)
	violations := checker.Violations()
	if len(violations) > 0 {
		chaosHistory(t, direct, backends[0], checker.Holds(), violations)
		trail.dump(t)
		for i, m := range c.Members {
			t.Logf("member %d log tail: %s", i, m.LogTail())
		}
		for _, h := range checker.Holds() {
			t.Logf("hold %s on %s token %d [%v .. %v]", h.Owner, h.Key, h.Token,
				h.Start.Sub(began).Round(time.Microsecond), h.End.Sub(began).Round(time.Microsecond))
		}
	}
	calmHolds := 0
	for _, h := range checker.Holds() {
		if h.Start.After(calm) {
			calmHolds++
		}
	}
	t.Logf("chaos result: seed %d, %v: faults injected %d (%s); holds checked %d (%d in the final calm); violations %d; %s; "+
		"Lock calls %s; first lock after the calm %s; Close %s; Liveness B margin (lease TTL left, whole seconds) %s",
		seed, *chaosDuration, faults.Total(), faults.String(), n, calmHolds, len(violations), tally.String(),
		chaostest.Summary(tally.Samples("lock")), chaostest.Summary(progress.LockWaits()), chaostest.Summary(tally.Samples("close")),
		chaostest.Summary(tally.Samples("margin")))
}

// newChaosClient is newClient with gRPC keep-alive pings, so that a
// connection left dead by the proxy (one whose bytes were dropped) is found
// and redialled.
func newChaosClient(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	cl, err := clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    10 * time.Second, // gRPC's minimum
		DialKeepAliveTimeout: 2 * time.Second,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("clientv3.New: %v", err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// chaosEtcdWorker locks key on m over and over until ctx ends: mostly
// short holds, every 17th longer than the TTL until the calm (after it,
// the liveness bound measures the recovery, not a queue of long holds).
// Every hold goes to c, every Lock call's duration to tally's "lock"
// sample (and fails t past its bound).
func chaosEtcdWorker(t *testing.T, ctx context.Context, m *ctxlock.Manager, key, who string, c *locktest.Checker, tally *chaostest.Stats,
	probe func(key string, token uint64, at time.Time), held func(locktest.Hold), calm func() bool) {
	l := m.NewLock(key)
	for i := 0; ctx.Err() == nil; i++ {
		actx, cancel := context.WithTimeout(ctx, chaosLockTimeout)
		called := time.Now()
		exp, err := l.Lock(actx)
		took := time.Since(called)
		cancel()
		tally.Sample("lock", took)
		if took > chaosLockTimeout+chaosLockSlack {
			t.Errorf("%s: Lock returned after %v (context %v): %v", who, took, chaosLockTimeout, err)
		}
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
		d := time.Duration(i%10+1) * 3 * time.Millisecond
		if i%17 == 16 && !calm() {
			d = chaosTTL + chaosTTL/2
			tally.Add("long holds", 1)
		}
		h, ended := chaostest.HoldFor(l, exp, who, start, token, d)
		c.Record(h)
		tally.Add("holds", 1)
		held(h)
		if ended {
			r := chaostest.Reason(l.Err())
			tally.Add("ended "+r, 1)
			if r == "expired" {
				probe(key, token, h.End)
			}
		}
	}
}

// chaosProbes measures the Liveness B margin of holds that expired: what
// the server still has of the hold's lease when the expiry channel closed.
// etcd reports a lease's remaining TTL in whole seconds (truncated), so a
// sample is a lower bound. Each probe reads past the proxies, off the
// workers' goroutines; wg waits for them.
type chaosProbes struct {
	direct  *clientv3.Client
	backend *etcd.Backend
	tally   *chaostest.Stats
	wg      sync.WaitGroup
}

func (p *chaosProbes) probe(key string, token uint64, expiredAt time.Time) {
	p.wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := p.direct.Get(ctx, p.backend.LockKey(key))
		switch {
		case err != nil:
			p.tally.Add("margin unmeasured (no answer)", 1)
			return
		case len(resp.Kvs) == 0:
			// Released by the Manager after the expiry, or lapsed.
			p.tally.Add("margin unmeasured (gone)", 1)
			return
		case uint64(resp.Kvs[0].CreateRevision) != token:
			p.tally.Add("margin unmeasured (taken over)", 1)
			return
		}
		ttl, err := p.direct.TimeToLive(ctx, clientv3.LeaseID(resp.Kvs[0].Lease))
		switch {
		case err != nil:
			p.tally.Add("margin unmeasured (no answer)", 1)
		case ttl.TTL < 0:
			p.tally.Add("margin unmeasured (gone)", 1)
		default:
			p.tally.Sample("margin", time.Duration(ttl.TTL)*time.Second)
		}
	})
}

// chaosHistory logs, for a failed run, the etcd history of the lock
// prefix around the holds that overlap: every put and delete with its
// revision, owner and lease, so that a violation shows which request
// freed the key.
func chaosHistory(t *testing.T, direct *clientv3.Client, b *etcd.Backend, holds []locktest.Hold, violations []string) {
	t.Helper()
	var lo, hi int64
	for _, v := range violations {
		for _, h := range holds {
			if h.Token != 0 && strings.Contains(v, fmt.Sprintf("(token %d)", h.Token)) {
				if lo == 0 || int64(h.Token) < lo {
					lo = int64(h.Token)
				}
				hi = max(hi, int64(h.Token))
			}
		}
	}
	if lo == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	from := max(lo-20, 1)
	for resp := range direct.Watch(wctx, b.LockKey(""), clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithPrevKV()) {
		if err := resp.Err(); err != nil {
			t.Logf("history: %v", err)
			return
		}
		for _, ev := range resp.Events {
			kv := ev.Kv
			lease, owner := kv.Lease, string(kv.Value)
			if ev.Type == clientv3.EventTypeDelete && ev.PrevKv != nil {
				lease, owner = ev.PrevKv.Lease, string(ev.PrevKv.Value)
			}
			t.Logf("history: rev %d %s %s owner %q lease %x (created at %d)", kv.ModRevision, ev.Type, kv.Key, owner, lease, kv.CreateRevision)
			if kv.ModRevision >= hi+10 {
				return
			}
		}
	}
}

// backendTrail records every Backend call of the Managers (what was asked,
// what came back, when), for the post-mortem of a violation.
type backendTrail struct {
	mu    sync.Mutex
	start time.Time
	lines []string
}

func (tr *backendTrail) add(format string, args ...any) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.start.IsZero() {
		tr.start = time.Now()
	}
	tr.lines = append(tr.lines, fmt.Sprintf("%v ", time.Since(tr.start).Round(time.Microsecond))+fmt.Sprintf(format, args...))
}

func (tr *backendTrail) dump(t *testing.T) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, l := range tr.lines[max(len(tr.lines)-3000, 0):] {
		t.Log("trail: " + l)
	}
}

// tracedBackend records the calls of one Manager's Backend.
type tracedBackend struct {
	*etcd.Backend
	name  string
	trail *backendTrail
}

func (b *tracedBackend) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	b.trail.add("%s acquire %s owner %s start", b.name, req.Key, req.Owner)
	l, err := b.Backend.Acquire(ctx, req)
	b.trail.add("%s acquire %s owner %s -> token %d err %v", b.name, req.Key, req.Owner, l.Token, err)
	return l, err
}

func (b *tracedBackend) Extend(ctx context.Context, leases []ctxlock.Lease, ttl time.Duration) []error {
	errs := b.Backend.Extend(ctx, leases, ttl)
	for i, l := range leases {
		b.trail.add("%s extend %s owner %s token %d -> %v", b.name, l.Key, l.Owner, l.Token, errs[i])
	}
	return errs
}

func (b *tracedBackend) Release(ctx context.Context, leases []ctxlock.Lease) []error {
	for _, l := range leases {
		b.trail.add("%s release %s owner %s token %d start", b.name, l.Key, l.Owner, l.Token)
	}
	errs := b.Backend.Release(ctx, leases)
	for i, l := range leases {
		b.trail.add("%s release %s owner %s token %d -> %v", b.name, l.Key, l.Owner, l.Token, errs[i])
	}
	return errs
}
