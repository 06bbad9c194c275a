package reliability_test

// Observability accounting under real faults: Managers instrumented with the
// OpenTelemetry SDK contend on real redis-servers (goredis: one server;
// Redlock: three nodes) behind fault proxies, through a blackhole longer
// than the TTL, leases deleted behind the holders' backs, a frozen server, a
// reset, a server killed and restarted, and a Close while releases cannot
// reach the server. After every Manager closed, what was recorded must add
// up with what the callers saw (see otel/README.md): every span ended, held
// and pending back to 0, one acquired outcome per successful Lock/TryLock,
// one hold end per hold with the reason its Lock value reports, hold spans
// for the losses only, documented outcomes and error.type values, and no
// negative measurement.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/backends/redlock"
	"github.com/ctxlock/ctxlock/internal/chaostest"
	"github.com/ctxlock/ctxlock/internal/faultproxy"
	"github.com/ctxlock/ctxlock/internal/redistest"
	ctxlockotel "github.com/ctxlock/ctxlock/otel"
)

// openSpans counts spans started and not yet ended, by name.
type openSpans struct {
	mu   sync.Mutex
	open map[trace.SpanID]string
	n    atomic.Int64
}

func (o *openSpans) OnStart(_ context.Context, s sdktrace.ReadWriteSpan) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.open == nil {
		o.open = map[trace.SpanID]string{}
	}
	o.open[s.SpanContext().SpanID()] = s.Name()
	o.n.Add(1)
}

func (o *openSpans) OnEnd(s sdktrace.ReadOnlySpan) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.open[s.SpanContext().SpanID()]; ok {
		delete(o.open, s.SpanContext().SpanID())
		o.n.Add(-1)
	}
}

func (o *openSpans) Shutdown(context.Context) error   { return nil }
func (o *openSpans) ForceFlush(context.Context) error { return nil }

func (o *openSpans) names() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for _, n := range o.open {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// acctTally is what the callers saw.
type acctTally struct {
	mu       sync.Mutex
	calls    map[string]int // by operation (lock, try_lock)
	acquired map[string]int // by operation
	ends     map[string]int // by reason, as Lock.Err says
	tokens   map[uint64]bool
	left     []ctxlock.Lock // holds left for Close
}

func (a *acctTally) call(op string, ok bool, token uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.calls == nil {
		a.calls, a.acquired, a.ends, a.tokens = map[string]int{}, map[string]int{}, map[string]int{}, map[uint64]bool{}
	}
	a.calls[op]++
	if ok {
		a.acquired[op]++
		if token != 0 {
			a.tokens[token] = true
		}
	}
}

func (a *acctTally) end(r string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ends[r]++
}

// endHold ends a hold of l: Unlock, or the reason it ended before.
func (a *acctTally) endHold(l ctxlock.Lock) string {
	r := "unlocked"
	if err := l.Unlock(); err != nil {
		r = chaostest.Reason(l.Err())
	}
	a.end(r)
	return r
}

// acctRig is n Managers on one backend kind, each reaching every node
// through its own fault proxy, all recording into one SDK.
type acctRig struct {
	t      *testing.T
	nodes  []*redistest.Server
	direct []*redis.Client
	px     [][]*faultproxy.Proxy // [manager][node]
	ms     []*ctxlock.Manager
	keys   func(key string) string // lease key on a node
	open   *openSpans
	rec    *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
	tally  acctTally
}

func newAcctRig(t *testing.T, redlockNodes, managers int) *acctRig {
	t.Helper()
	n := max(redlockNodes, 1)
	r := &acctRig{t: t, nodes: redistest.StartNodes(t, n), open: &openSpans{}, rec: tracetest.NewSpanRecorder(),
		reader: sdkmetric.NewManualReader()}
	r.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(r.open), sdktrace.WithSpanProcessor(r.rec))
	r.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(r.reader))
	for _, s := range r.nodes {
		r.direct = append(r.direct, s.Client(t))
	}
	for range managers {
		var clients []redis.UniversalClient
		var pxs []*faultproxy.Proxy
		for _, s := range r.nodes {
			px := faultproxy.Start(t, s.Addr())
			pxs = append(pxs, px)
			clients = append(clients, redis.NewClient(clientOptions(px.Addr())))
		}
		var b ctxlock.Backend
		if redlockNodes == 0 {
			gb := goredis.New(clients[0], goredis.WithHealthCheckInterval(netTimeout), goredis.WithSubscribeWait(100*time.Millisecond))
			r.keys = func(key string) string { lk, _, _ := gb.Keys(key); return lk }
			b = gb
		} else {
			rb, err := redlock.New(clients)
			if err != nil {
				t.Fatal(err)
			}
			r.keys = func(key string) string { lk, _, _ := rb.Keys(key); return lk }
			b = rb
		}
		m := ctxlock.NewManager(b, ctxlock.WithTracerProvider(r.tp), ctxlock.WithMeterProvider(r.mp))
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			_ = m.Close(ctx)
			_ = b.Close()
			for _, c := range clients {
				_ = c.Close()
			}
		})
		r.ms = append(r.ms, m)
		r.px = append(r.px, pxs)
	}
	return r
}

// majority is the nodes a fault must hit to cut a Manager off: the one
// server, or a quorum's complement plus one of the Redlock nodes.
func (r *acctRig) majority() []int {
	out := []int{}
	for i := range len(r.nodes)/2 + 1 {
		out = append(out, i)
	}
	return out
}

// worker contends on key through m until ctx ends or m closes; when ctx
// ends first it takes the key once more and leaves it held for Close.
func (r *acctRig) worker(ctx context.Context, m *ctxlock.Manager, key string, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	l := m.NewLock(key, lockOpts()...)
	for ctx.Err() == nil {
		var (
			exp <-chan struct{}
			ok  bool
			err error
		)
		switch rng.IntN(4) {
		case 0:
			actx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			ok, exp, err = l.TryLock(actx)
			cancel()
			ok = ok && err == nil
			r.tally.call(ctxlockotel.OpTryLock, ok, l.Token())
		case 1:
			// Do: one Lock call, then fn, then Unlock (or the hold ended).
			actx, cancel := context.WithTimeout(ctx, time.Duration(100+rng.IntN(600))*time.Millisecond)
			d := time.Duration(rng.IntN(400)) * time.Millisecond
			ran := false
			var token uint64
			err = ctxlock.Do(actx, l, func(fctx context.Context) error {
				ran, token = true, l.Token()
				select {
				case <-fctx.Done():
				case <-time.After(d):
				}
				return nil
			})
			cancel()
			r.tally.call(ctxlockotel.OpLock, ran, token)
			if ran {
				// Do unlocked, unless the hold ended first: Err says which.
				r.tally.end(chaostest.Reason(l.Err()))
			}
			if errors.Is(err, ctxlock.ErrClosed) && !ran {
				return
			}
			continue
		default:
			actx, cancel := context.WithTimeout(ctx, time.Duration(100+rng.IntN(600))*time.Millisecond)
			exp, err = l.Lock(actx)
			cancel()
			ok = err == nil
			r.tally.call(ctxlockotel.OpLock, ok, l.Token())
		}
		if errors.Is(err, ctxlock.ErrClosed) {
			return
		}
		if !ok {
			continue
		}
		d := time.Duration(rng.IntN(300)) * time.Millisecond
		if rng.IntN(8) == 0 {
			d = ttl + ttl/2 // refreshed a few times
		}
		timer := time.NewTimer(d)
		select {
		case <-exp:
		case <-timer.C:
		}
		timer.Stop()
		r.tally.endHold(l)
	}
	actx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := l.Lock(actx)
	r.tally.call(ctxlockotel.OpLock, err == nil, l.Token())
	if err == nil {
		r.tally.mu.Lock()
		r.tally.left = append(r.tally.left, l)
		r.tally.mu.Unlock()
	}
}

// holdThrough takes key on m, runs fault, and waits for the hold to end on
// its own; it returns the reason.
func (r *acctRig) holdThrough(m *ctxlock.Manager, key string, fault func()) string {
	r.t.Helper()
	l := m.NewLock(key, lockOpts()...)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	exp, err := l.Lock(ctx)
	r.tally.call(ctxlockotel.OpLock, err == nil, l.Token())
	if err != nil {
		r.t.Fatalf("Lock %q before the fault: %v", key, err)
	}
	fault()
	select {
	case <-exp:
	case <-ctx.Done():
		r.t.Fatalf("hold of %q did not end after the fault", key)
	}
	return r.tally.endHold(l)
}

func (r *acctRig) del(nodes []int, keys ...string) {
	for _, i := range nodes {
		for _, k := range keys {
			_ = r.direct[i].Del(context.Background(), r.keys(k)).Err()
		}
	}
}

func TestOtelAccountingUnderFaults(t *testing.T) {
	for _, tc := range []struct {
		name  string
		nodes int // 0: goredis on one server
	}{{"goredis", 0}, {"redlock", 3}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each on its own servers, proxies and SDK
			testOtelAccountingUnderFaults(t, tc.nodes)
		})
	}
}

func testOtelAccountingUnderFaults(t *testing.T, redlockNodes int) {
	r := newAcctRig(t, redlockNodes, 3)
	maj := r.majority()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	keys := []string{"acct-0", "acct-1"}
	for i, m := range r.ms {
		for j := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.worker(ctx, m, keys[(i+j)%2], uint64(i*10+j))
			}()
		}
	}
	pause := func(d time.Duration) { time.Sleep(d) } // letting the contention run through a fault

	// Manager 0 cut off past the TTL: its holds expire, its calls time out.
	if got := r.holdThrough(r.ms[0], "acct-expire", func() {
		for _, n := range maj {
			r.px[0][n].Blackhole()
		}
	}); got != "expired" {
		t.Errorf("hold through a blackhole ended %s, want expired", got)
	}
	for _, n := range maj {
		r.px[0][n].Pass()
	}
	// Leases deleted behind the holders' backs: lost at the next refresh.
	if got := r.holdThrough(r.ms[1], "acct-lost", func() {
		r.del(maj, "acct-lost", keys[0], keys[1])
	}); got != "lost" && !(redlockNodes > 0 && got == "expired") {
		t.Errorf("hold whose lease was deleted ended %s, want lost", got)
	}
	// Servers frozen past the TTL.
	for _, n := range maj {
		r.nodes[n].Stop()
	}
	pause(ttl)
	for _, n := range maj {
		r.nodes[n].Cont()
	}
	// Connections reset.
	for _, n := range maj {
		r.px[1][n].Reset()
	}
	pause(200 * time.Millisecond)
	for _, n := range maj {
		r.px[1][n].Pass()
	}
	// Servers killed and restarted empty: every lease on them is gone.
	for _, n := range maj {
		r.nodes[n].Kill()
	}
	for _, n := range maj {
		r.nodes[n].Restart()
	}
	// Slow links.
	for _, n := range maj {
		r.px[2][n].Delay(100*time.Millisecond, 100*time.Millisecond)
	}
	pause(300 * time.Millisecond)
	for _, n := range maj {
		r.px[2][n].Pass()
	}

	// Manager 2 unlocks while it cannot reach the servers, and closes
	// without waiting, its workers still running: its releases are
	// abandoned. Manager 1 closes under its running workers; Manager 0's
	// releases are slow but drain.
	l := r.ms[2].NewLock("acct-close", lockOpts()...)
	lctx, cancel := context.WithTimeout(context.Background(), waitLong)
	_, err := l.Lock(lctx)
	cancel()
	r.tally.call(ctxlockotel.OpLock, err == nil, l.Token())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range maj {
		r.px[2][n].Blackhole()
	}
	r.tally.endHold(l)
	cctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	if err := r.ms[2].Close(cctx); err == nil {
		t.Logf("Close of the cut-off Manager drained its releases anyway")
	}
	cancel()
	cctx, cancel = context.WithTimeout(context.Background(), waitLong)
	if err := r.ms[1].Close(cctx); err != nil {
		t.Errorf("Close of Manager 1: %v", err)
	}
	cancel()
	stop()
	wg.Wait()
	for _, n := range maj {
		r.px[0][n].Delay(50*time.Millisecond, 50*time.Millisecond)
	}
	cctx, cancel = context.WithTimeout(context.Background(), waitLong)
	if err := r.ms[0].Close(cctx); err != nil {
		t.Errorf("Close of Manager 0: %v", err)
	}
	cancel()
	r.tally.mu.Lock()
	for _, l := range r.tally.left {
		r.tally.ends[chaostest.Reason(l.Err())]++
	}
	r.tally.mu.Unlock()

	// Right after Close: no hold, no pending release.
	r.checkGaugesZero("after Close")
	// Work the cut-off Manager left in flight ends within its timeouts.
	deadline := time.Now().Add(waitLong)
	for r.open.n.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling real-time backend calls to time out
	}
	if n := r.open.n.Load(); n != 0 {
		t.Errorf("%d spans still open %v after Close: %v", n, waitLong, r.open.names())
	}
	r.checkGaugesZero("once the last backend calls ended")
	r.check()
}

// checkGaugesZero checks every series of ctxlock.held and ctxlock.release.pending.
func (r *acctRig) checkGaugesZero(when string) {
	rm := r.collect()
	for _, name := range []string{ctxlockotel.MetricHeld, ctxlockotel.MetricReleasePending} {
		m, ok := acctMetric(rm, name)
		if !ok {
			r.t.Errorf("%s not recorded", name)
			continue
		}
		for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
			if dp.Value != 0 {
				r.t.Errorf("%s: %s{%s} = %d, want 0", when, name, acctAttrs(dp.Attributes), dp.Value)
			}
		}
	}
}

func (r *acctRig) collect() metricdata.ResourceMetrics {
	r.t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.reader.Collect(context.Background(), &rm); err != nil {
		r.t.Fatal(err)
	}
	return rm
}

func acctMetric(rm metricdata.ResourceMetrics, name string) (metricdata.Metrics, bool) {
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != ctxlockotel.ScopeName {
			continue
		}
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

func acctAttrs(s attribute.Set) string {
	var out []string
	for _, kv := range s.ToSlice() {
		out = append(out, fmt.Sprintf("%s=%s", kv.Key, kv.Value.String()))
	}
	return strings.Join(out, ",")
}

// acctCount sums a counter's series, or a histogram's counts, over the
// series that have every attribute of match.
func acctCount(rm metricdata.ResourceMetrics, name string, match ...attribute.KeyValue) int64 {
	m, ok := acctMetric(rm, name)
	if !ok {
		return 0
	}
	has := func(s attribute.Set) bool {
		for _, kv := range match {
			if v, ok := s.Value(kv.Key); !ok || v != kv.Value {
				return false
			}
		}
		return true
	}
	var n int64
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, dp := range d.DataPoints {
			if has(dp.Attributes) {
				n += dp.Value
			}
		}
	case metricdata.Histogram[float64]:
		for _, dp := range d.DataPoints {
			if has(dp.Attributes) {
				n += int64(dp.Count)
			}
		}
	case metricdata.Histogram[int64]:
		for _, dp := range d.DataPoints {
			if has(dp.Attributes) {
				n += int64(dp.Count)
			}
		}
	}
	return n
}

func spanAttrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	out := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		out[kv.Key] = kv.Value
	}
	return out
}

// validErrorType reports whether v is one of the documented forms of
// error.type (otel/README.md, "error.type values").
func validErrorType(v string) bool {
	switch {
	case v == "context.Canceled", v == "context.DeadlineExceeded", v == ctxlockotel.ErrorTypeOther:
		return true
	case strings.HasPrefix(v, "ctxlock.") && !strings.ContainsAny(v, " :"):
		return true
	}
	// A Go type name, package-qualified (net.OpError), or an ErrorType()
	// method's result (redlock's quorum error).
	return v != "" && !strings.ContainsAny(v, " \n")
}

// check compares what was recorded with what the callers saw.
func (r *acctRig) check() {
	t := r.t
	rm := r.collect()
	spans := r.rec.Ended()
	tl := &r.tally
	tl.mu.Lock()
	defer tl.mu.Unlock()
	t.Logf("calls %v, acquired %v, hold ends %v", tl.calls, tl.acquired, tl.ends)

	// Acquire calls: one span and one duration record each, by operation;
	// one acquired outcome per successful call.
	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byName[s.Name()] = append(byName[s.Name()], s)
	}
	acquiredSpans := map[trace.SpanID]bool{}
	errorTypes := map[string]int{}
	contended := map[string]int64{}
	for op, name := range map[string]string{ctxlockotel.OpLock: ctxlockotel.SpanLock, ctxlockotel.OpTryLock: ctxlockotel.SpanTryLock} {
		opAttr := ctxlockotel.AttrOperation.String(op)
		if got := len(byName[name]); got != tl.calls[op] {
			t.Errorf("%d %s spans, want %d (%s calls)", got, name, tl.calls[op], op)
		}
		if got := acctCount(rm, ctxlockotel.MetricAcquireDuration, opAttr); got != int64(tl.calls[op]) {
			t.Errorf("%s{%s}: count %d, want %d calls", ctxlockotel.MetricAcquireDuration, op, got, tl.calls[op])
		}
		if got := acctCount(rm, ctxlockotel.MetricWaitDuration, opAttr); got != int64(tl.calls[op]) {
			t.Errorf("%s{%s}: count %d, want %d calls", ctxlockotel.MetricWaitDuration, op, got, tl.calls[op])
		}
		if got := acctCount(rm, ctxlockotel.MetricAcquireDuration, opAttr,
			ctxlockotel.AttrOutcome.String(ctxlockotel.OutcomeAcquired)); got != int64(tl.acquired[op]) {
			t.Errorf("%s{%s, acquired}: count %d, want %d successful calls", ctxlockotel.MetricAcquireDuration, op, got, tl.acquired[op])
		}
		nAcq := 0
		for _, s := range byName[name] {
			a := spanAttrs(s)
			outcome := a[ctxlockotel.AttrOutcome].AsString()
			et, typed := a[ctxlockotel.AttrErrorType]
			failed := s.Status().Code == codes.Error
			if typed {
				errorTypes[outcome+"/"+et.AsString()]++
				if !validErrorType(et.AsString()) {
					t.Errorf("%s: error.type %q is none of the documented forms", name, et.AsString())
				}
			}
			if a[ctxlockotel.AttrContended].AsBool() {
				contended[op]++
			}
			if w := a[ctxlockotel.AttrWaitTime].AsFloat64(); w < 0 || w > s.EndTime().Sub(s.StartTime()).Seconds()+1e-9 ||
				(op == ctxlockotel.OpTryLock && w != 0) {
				t.Errorf("%s: wait_time %v for a call of %v", name, w, s.EndTime().Sub(s.StartTime()))
			}
			if s.EndTime().Before(s.StartTime()) {
				t.Errorf("%s ends before it starts", name)
			}
			switch outcome {
			case ctxlockotel.OutcomeAcquired:
				nAcq++
				acquiredSpans[s.SpanContext().SpanID()] = true
				tok, ok := a[ctxlockotel.AttrFencingToken]
				if failed || typed || !ok || tok.AsInt64() <= 0 {
					t.Errorf("%s acquired: status %v, error.type %q, fencing token %v", name, s.Status(), et.AsString(), tok.String())
				} else if !tl.tokens[uint64(tok.AsInt64())] {
					// Token() right after a successful return reads 0 only
					// when the hold already ended.
					t.Logf("%s acquired with token %d the caller never saw (ended at once?)", name, tok.AsInt64())
				}
			case ctxlockotel.OutcomeHeld:
				if op != ctxlockotel.OpTryLock || failed || typed {
					t.Errorf("%s held: status %v, error.type %q; want a TryLock, Unset, none", name, s.Status(), et.AsString())
				}
			case ctxlockotel.OutcomeCanceled:
				if failed != typed {
					t.Errorf("%s canceled: status %v with error.type %q: want Error exactly when a fault is named", name, s.Status(), et.AsString())
				}
				if typed && strings.HasPrefix(et.AsString(), "context.") {
					t.Errorf("%s canceled with a fault: error.type %q names the context, not the fault", name, et.AsString())
				}
			case ctxlockotel.OutcomeClosed, ctxlockotel.OutcomeError:
				if !failed || !typed {
					t.Errorf("%s %s: status %v, error.type %q; want Error and a type", name, outcome, s.Status(), et.AsString())
				}
			default:
				t.Errorf("%s: undocumented outcome %q", name, outcome)
			}
		}
		if nAcq != tl.acquired[op] {
			t.Errorf("%d %s spans acquired, want %d", nAcq, name, tl.acquired[op])
		}
		if got := acctCount(rm, ctxlockotel.MetricContention, opAttr); got != contended[op] {
			t.Errorf("%s{%s} = %d, but %d spans say contended", ctxlockotel.MetricContention, op, got, contended[op])
		}
	}
	t.Logf("acquire error.type values: %v", errorTypes)

	// Holds: one end each, by the reason the Lock value reports; a hold
	// span, child of its acquire span, for each loss and expiry only.
	holds := 0
	for _, n := range tl.acquired {
		holds += n
	}
	if got := acctCount(rm, ctxlockotel.MetricHoldDuration); got != int64(holds) {
		t.Errorf("%s: count %d, want %d holds", ctxlockotel.MetricHoldDuration, got, holds)
	}
	for _, reason := range []string{ctxlockotel.ReasonUnlocked, ctxlockotel.ReasonLost, ctxlockotel.ReasonExpired, ctxlockotel.ReasonClosed} {
		ra := ctxlockotel.AttrHoldEndReason.String(reason)
		if got := acctCount(rm, ctxlockotel.MetricHoldDuration, ra); got != int64(tl.ends[reason]) {
			t.Errorf("%s{%s}: count %d, want %d", ctxlockotel.MetricHoldDuration, reason, got, tl.ends[reason])
		}
		want := int64(tl.ends[reason])
		if reason == ctxlockotel.ReasonUnlocked || reason == ctxlockotel.ReasonClosed {
			want = 0
		}
		if got := acctCount(rm, ctxlockotel.MetricHoldLost, ra); got != want {
			t.Errorf("%s{%s} = %d, want %d", ctxlockotel.MetricHoldLost, reason, got, want)
		}
	}
	if tl.ends["other"] != 0 {
		t.Errorf("%d holds ended for an undocumented reason", tl.ends["other"])
	}
	holdSpans := map[string]int{}
	for _, s := range byName[ctxlockotel.SpanHold] {
		a := spanAttrs(s)
		reason := a[ctxlockotel.AttrHoldEndReason].AsString()
		holdSpans[reason]++
		wantType := map[string]string{ctxlockotel.ReasonLost: "ctxlock.lock_lost", ctxlockotel.ReasonExpired: "ctxlock.lock_expired"}[reason]
		if got := a[ctxlockotel.AttrErrorType].AsString(); got != wantType || s.Status().Code != codes.Error {
			t.Errorf("%s %s: error.type %q status %v, want %q and Error", ctxlockotel.SpanHold, reason, got, s.Status(), wantType)
		}
		if !acquiredSpans[s.Parent().SpanID()] || s.Parent().TraceID() != s.SpanContext().TraceID() {
			t.Errorf("%s %s: parent %v is not an acquired acquire span", ctxlockotel.SpanHold, reason, s.Parent().SpanID())
		}
		wantEvent := map[string]string{ctxlockotel.ReasonLost: ctxlockotel.EventHoldLost, ctxlockotel.ReasonExpired: ctxlockotel.EventHoldExpired}[reason]
		if !slices.ContainsFunc(s.Events(), func(e sdktrace.Event) bool { return e.Name == wantEvent }) {
			t.Errorf("%s %s: no %s event", ctxlockotel.SpanHold, reason, wantEvent)
		}
		if ht := a[ctxlockotel.AttrHoldTime].AsFloat64(); ht < 0 || s.EndTime().Before(s.StartTime()) {
			t.Errorf("%s: hold_time %v, from %v to %v", ctxlockotel.SpanHold, ht, s.StartTime(), s.EndTime())
		}
	}
	if holdSpans[ctxlockotel.ReasonLost] != tl.ends["lost"] || holdSpans[ctxlockotel.ReasonExpired] != tl.ends["expired"] ||
		len(byName[ctxlockotel.SpanHold]) != tl.ends["lost"]+tl.ends["expired"] {
		t.Errorf("%s spans %v, want lost=%d expired=%d and no other", ctxlockotel.SpanHold, holdSpans, tl.ends["lost"], tl.ends["expired"])
	}

	// Batches: one span and one duration record each; failures flagged.
	batchTypes := map[string]int{}
	defer func() { t.Logf("batch error.type values: %v", batchTypes) }()
	for op, name := range map[string]string{ctxlockotel.OpRefresh: ctxlockotel.SpanRefresh, ctxlockotel.OpRelease: ctxlockotel.SpanRelease} {
		opAttr := ctxlockotel.AttrOperation.String(op)
		if got := acctCount(rm, ctxlockotel.MetricBatchDuration, opAttr); got != int64(len(byName[name])) {
			t.Errorf("%s{%s}: count %d, want %d (%s spans)", ctxlockotel.MetricBatchDuration, op, got, len(byName[name]), name)
		}
		failedBatches := 0
		for _, s := range byName[name] {
			a := spanAttrs(s)
			size, failed := a[ctxlockotel.AttrBatchSize].AsInt64(), a[ctxlockotel.AttrBatchFailed].AsInt64()
			et, typed := a[ctxlockotel.AttrErrorType]
			isErr := s.Status().Code == codes.Error
			if size <= 0 || failed < 0 || failed > size || isErr != (failed > 0) || typed != isErr || s.Parent().IsValid() {
				t.Errorf("%s: size %d failed %d status %v error.type %q parent %v", name, size, failed, s.Status(), et.AsString(), s.Parent().SpanID())
			}
			if typed && !validErrorType(et.AsString()) {
				t.Errorf("%s: error.type %q is none of the documented forms", name, et.AsString())
			}
			if isErr {
				failedBatches++
				batchTypes[op+"/"+et.AsString()]++
			}
		}
		t.Logf("%d %s spans, %d failed", len(byName[name]), name, failedBatches)
	}
	if got := acctCount(rm, ctxlockotel.MetricRefreshBatchSize); got != int64(len(byName[ctxlockotel.SpanRefresh])) {
		t.Errorf("%s: count %d, want %d refresh spans", ctxlockotel.MetricRefreshBatchSize, got, len(byName[ctxlockotel.SpanRefresh]))
	}

	// No negative measurement anywhere.
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					if mn, ok := dp.Min.Value(); (ok && mn < 0) || dp.Sum < 0 {
						t.Errorf("%s{%s}: min %v sum %v", m.Name, acctAttrs(dp.Attributes), mn, dp.Sum)
					}
				}
			case metricdata.Histogram[int64]:
				for _, dp := range d.DataPoints {
					if mn, ok := dp.Min.Value(); (ok && mn < 0) || dp.Sum < 0 {
						t.Errorf("%s{%s}: min %v sum %v", m.Name, acctAttrs(dp.Attributes), mn, dp.Sum)
					}
				}
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					if dp.Value < 0 {
						t.Errorf("%s{%s} = %d", m.Name, acctAttrs(dp.Attributes), dp.Value)
					}
				}
			}
		}
	}
}
