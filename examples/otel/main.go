// Command otel shows ctxlock's OpenTelemetry instrumentation on a small
// contention scenario: three Managers (think: three processes) with two
// workers each take turns on the keys "orders" and "billing" of one
// in-memory store. Halfway through, the store "forgets" the holder of
// billing, whose hold is then found lost.
//
// It prints what happens (who holds, who waits, fencing tokens, losses), one
// summary line per interesting span, and serves the metrics on a Prometheus
// endpoint for as long as it runs:
//
//	go run ./examples/otel                 # 10 seconds
//	go run ./examples/otel -duration 3s
//	go run ./examples/otel -duration 1m &  # then, in another shell:
//	curl -s http://127.0.0.1:9464/metrics | grep '^ctxlock_'
//
// Flags: -duration, -addr (the metrics endpoint, default 127.0.0.1:9464;
// 127.0.0.1:0 picks a free port), -traces summary|json|off (json: the raw
// spans as the stdouttrace exporter writes them, one JSON object per line),
// -sample (the share of traces recorded, e.g. 0.1 with -traces json).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
	ctxlockotel "github.com/ctxlock/ctxlock/otel"
)

// config is what the flags set; the test sets the rest.
type config struct {
	duration time.Duration
	addr     string
	traces   string  // summary, json or off
	sample   float64 // share of traces recorded
	out      io.Writer

	listener   net.Listener            // if set, serve on it instead of addr
	beforeExit func(metricsURL string) // called after the scenario, while the endpoint still serves
}

var keys = []string{"orders", "billing"}

const (
	processes       = 3 // Managers sharing the store
	workersPerKey   = 2 // goroutines per Manager and key
	ttl             = 2 * time.Second
	refreshInterval = 250 * time.Millisecond
)

func main() {
	cfg := config{out: os.Stdout}
	flag.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long the scenario runs")
	flag.StringVar(&cfg.addr, "addr", "127.0.0.1:9464", "address of the Prometheus metrics endpoint (127.0.0.1:0: any free port)")
	flag.StringVar(&cfg.traces, "traces", "summary", "how spans are printed: summary (one line per span), json (stdouttrace exporter), off")
	flag.Float64Var(&cfg.sample, "sample", 1, "share of traces recorded, in (0, 1]")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "otel example:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config) error {
	if cfg.out == nil {
		cfg.out = io.Discard
	}
	if cfg.sample <= 0 || cfg.sample > 1 {
		return fmt.Errorf("-sample %v: want a share in (0, 1]", cfg.sample)
	}
	p := &printer{w: cfg.out, start: time.Now()}
	res := resource.NewSchemaless(attribute.String("service.name", "ctxlock-otel-example"))

	// Metrics: the OpenTelemetry SDK, read by the Prometheus exporter into a
	// registry of our own, served by promhttp. The translation strategy is
	// explicit: dots become underscores and units and _total are appended,
	// the names the dashboard (otel/dashboards/ctxlock.json) queries.
	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes))
	if err != nil {
		return err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter), sdkmetric.WithResource(res))
	defer mp.Shutdown(context.Background())

	ln := cfg.listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.addr); err != nil {
			return fmt.Errorf("metrics endpoint: %w (another copy running? try -addr 127.0.0.1:0)", err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdownCtx)
		<-served
	}()
	metricsURL := "http://" + ln.Addr().String() + "/metrics"

	// Traces: every span goes to stdout, as a summary line or as JSON.
	var tp *sdktrace.TracerProvider
	summary := &summaryExporter{p: p}
	switch cfg.traces {
	case "summary":
		tp = sdktrace.NewTracerProvider(sdktrace.WithResource(res),
			sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.sample))),
			sdktrace.WithSyncer(summary))
	case "json":
		exp, err := stdouttrace.New(stdouttrace.WithWriter(p.locked()))
		if err != nil {
			return err
		}
		tp = sdktrace.NewTracerProvider(sdktrace.WithResource(res),
			sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.sample))),
			sdktrace.WithBatcher(exp))
	case "off":
	default:
		return fmt.Errorf("-traces %q: want summary, json or off", cfg.traces)
	}
	var tracer trace.Tracer = tracenoop.NewTracerProvider().Tracer("")
	var tpOpt ctxlock.ManagerOption
	if tp != nil {
		defer tp.Shutdown(context.Background())
		tracer = tp.Tracer("example/worker")
		tpOpt = ctxlock.WithTracerProvider(tp)
	}

	p.say("setup", "%d Managers (p1..p%d, think: processes) share one in-memory store; %d workers each per key %s",
		processes, processes, workersPerKey, strings.Join(keys, ", "))
	p.say("setup", "locks: TTL %v, refreshed every %v; every hold gets a fencing token, strictly increasing per key", ttl, refreshInterval)
	p.say("setup", "metrics: curl -s %s | grep '^ctxlock_'   (served while this runs, %v)", metricsURL, cfg.duration)
	p.say("setup", "dashboard: import otel/dashboards/ctxlock.json into Grafana, on a Prometheus that scrapes %s", ln.Addr())

	store := memory.New()
	defer store.Close()
	managers := make([]*ctxlock.Manager, processes)
	for i := range managers {
		managers[i] = ctxlock.NewManager(store, tpOpt, ctxlock.WithMeterProvider(mp))
	}

	runCtx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	st := &state{waiting: map[string][]string{}}
	var wg sync.WaitGroup
	for i, m := range managers {
		for _, key := range keys {
			for w := 1; w <= workersPerKey; w++ {
				name := fmt.Sprintf("p%d/w%d", i+1, w)
				wg.Go(func() { worker(runCtx, p, st, tracer, m, key, name) })
			}
		}
	}
	wg.Go(func() { statusLoop(runCtx, p, st, store) })
	wg.Go(func() { evictHalfway(runCtx, cfg.duration, p, st, store, "billing") })
	wg.Wait()

	closeCtx, cancelClose := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelClose()
	for _, m := range managers {
		if err := m.Close(closeCtx); err != nil {
			p.say("close", "%v", err)
		}
	}
	if tp != nil {
		tp.ForceFlush(closeCtx)
	}
	p.say("done", "spans exported: %s", summary.counts())
	if err := printMetrics(p, metricsURL); err != nil {
		p.say("done", "scraping %s: %v", metricsURL, err)
	}
	if cfg.beforeExit != nil {
		cfg.beforeExit(metricsURL)
	}
	return nil
}

// worker locks key over and over through m: each round is a "request" with
// its own span, under which ctxlock's Lock span appears.
func worker(ctx context.Context, p *printer, st *state, tracer trace.Tracer, m *ctxlock.Manager, key, name string) {
	l := m.NewLock(key, ctxlock.WithTTL(ttl), ctxlock.WithRefreshInterval(refreshInterval), ctxlock.WithMetadata(name))
	for ctx.Err() == nil {
		rctx, span := tracer.Start(ctx, "handle "+key, trace.WithAttributes(attribute.String("worker", name)))
		st.setWaiting(key, name, true)
		t0 := time.Now()
		expired, err := l.Lock(rctx)
		st.setWaiting(key, name, false)
		if err != nil {
			span.End()
			if ctx.Err() == nil {
				p.say(key, "%s could not lock: %v", name, err)
			}
			return
		}
		token := l.Token()
		st.setHolder(key, name, token)
		p.say(key, "%s acquired %s, token %d, after waiting %v", name, key, token, time.Since(t0).Round(time.Millisecond))
		hold := time.NewTimer(randDuration(300*time.Millisecond, 700*time.Millisecond))
		select {
		case <-hold.C:
			l.Unlock()
		case <-expired:
			p.say(key, "%s LOST %s (token %d): %v", name, key, token, l.Err())
			span.SetStatus(codes.Error, "lock lost")
		case <-ctx.Done():
			l.Unlock()
		}
		hold.Stop()
		span.End()
		sleep(ctx, randDuration(200*time.Millisecond, 800*time.Millisecond))
	}
}

// statusLoop prints, every second, who holds each key (as the store says)
// and who waits for it.
func statusLoop(ctx context.Context, p *printer, st *state, store *memory.Backend) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var parts []string
		for _, key := range keys {
			holder := "free"
			if _, who, token, remaining, ok := store.Holder(key); ok {
				holder = fmt.Sprintf("held by %s (token %d, lease %v left)", who, token, remaining.Round(time.Millisecond))
			}
			waiting := st.waiters(key)
			if len(waiting) == 0 {
				parts = append(parts, fmt.Sprintf("%s %s, nobody waiting", key, holder))
			} else {
				parts = append(parts, fmt.Sprintf("%s %s, %d waiting: %s", key, holder, len(waiting), strings.Join(waiting, " ")))
			}
		}
		p.say("status", "%s", strings.Join(parts, " | "))
	}
}

// evictHalfway makes the store forget key's lease once, halfway through, as
// a failover that loses data would: the holder finds out at its next
// refresh. It strikes a hold just acquired, so that the holder refreshes
// (and notices) before it would have unlocked.
func evictHalfway(ctx context.Context, d time.Duration, p *printer, st *state, store *memory.Backend, key string) {
	if !sleep(ctx, d/2) {
		return
	}
	for {
		if name, token, since, ok := st.holder(key); ok && time.Since(since) < 50*time.Millisecond {
			if _, _, stored, _, held := store.Holder(key); held && stored == token {
				p.say("chaos", "the store forgets %s's lease on %s (token %d): its next refresh finds it lost", name, key, token)
				store.Evict(key)
				return
			}
		}
		if !sleep(ctx, 5*time.Millisecond) {
			return
		}
	}
}

// state is who waits for which key, for the status line, and who last
// acquired it, for the chaos step.
type state struct {
	mu      sync.Mutex
	waiting map[string][]string
	holders map[string]holding
}

type holding struct {
	name  string
	token uint64
	since time.Time
}

func (s *state) setHolder(key, name string, token uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.holders == nil {
		s.holders = map[string]holding{}
	}
	s.holders[key] = holding{name, token, time.Now()}
}

func (s *state) holder(key string) (name string, token uint64, since time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.holders[key]
	return h.name, h.token, h.since, ok
}

func (s *state) setWaiting(key, name string, waiting bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := slices.DeleteFunc(s.waiting[key], func(n string) bool { return n == name })
	if waiting {
		ws = append(ws, name)
	}
	s.waiting[key] = ws
}

func (s *state) waiters(key string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := slices.Clone(s.waiting[key])
	slices.Sort(ws)
	return ws
}

// printer writes timestamped lines; safe for concurrent use.
type printer struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func (p *printer) say(topic, format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "%6.2fs  %-7s %s\n", time.Since(p.start).Seconds(), topic, fmt.Sprintf(format, args...))
}

// locked returns a writer that takes p's lock for each write.
func (p *printer) locked() io.Writer { return lockedWriter{p} }

type lockedWriter struct{ p *printer }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.w.Write(b)
}

// summaryExporter is a span exporter that prints one line per ctxlock span
// worth reading (Lock and TryLock calls, lost or expired holds, failed
// batches) and counts every span.
type summaryExporter struct {
	p      *printer
	mu     sync.Mutex
	byName map[string]int
}

func (e *summaryExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	for _, s := range spans {
		e.mu.Lock()
		if e.byName == nil {
			e.byName = map[string]int{}
		}
		e.byName[s.Name()]++
		e.mu.Unlock()
		if line := summarize(s); line != "" {
			e.p.say("span", "%s", line)
		}
	}
	return nil
}

func (e *summaryExporter) Shutdown(context.Context) error { return nil }

func (e *summaryExporter) counts() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.byName) == 0 {
		return "none"
	}
	var parts []string
	for name, n := range e.byName {
		parts = append(parts, fmt.Sprintf("%s %d", name, n))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// summarize returns one line for s, or "" for spans not worth a line
// (the workers' own spans, successful refresh and release batches).
func summarize(s sdktrace.ReadOnlySpan) string {
	a := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		a[kv.Key] = kv.Value
	}
	tid := s.SpanContext().TraceID().String()[:8]
	status := ""
	if s.Status().Code == codes.Error {
		status = " status=Error error.type=" + a[ctxlockotel.AttrErrorType].AsString()
	}
	switch s.Name() {
	case ctxlockotel.SpanLock, ctxlockotel.SpanTryLock:
		line := fmt.Sprintf("%-19s trace %s key=%s outcome=%s attempts=%d contended=%v",
			s.Name(), tid, a[ctxlockotel.AttrKey].AsString(), a[ctxlockotel.AttrOutcome].AsString(),
			a[ctxlockotel.AttrAttempts].AsInt64(), a[ctxlockotel.AttrContended].AsBool())
		if v, ok := a[ctxlockotel.AttrWaitTime]; ok {
			line += fmt.Sprintf(" wait_time=%v", seconds(v.AsFloat64()))
		}
		if v, ok := a[ctxlockotel.AttrFencingToken]; ok {
			line += " fencing_token=" + v.String()
		}
		return line + fmt.Sprintf(" duration=%v", s.EndTime().Sub(s.StartTime()).Round(time.Millisecond)) + status
	case ctxlockotel.SpanHold:
		return fmt.Sprintf("%-19s trace %s key=%s end_reason=%s hold_time=%v (child of the acquire span of that trace)%s",
			s.Name(), tid, a[ctxlockotel.AttrKey].AsString(), a[ctxlockotel.AttrHoldEndReason].AsString(),
			seconds(a[ctxlockotel.AttrHoldTime].AsFloat64()), status)
	case ctxlockotel.SpanRefresh, ctxlockotel.SpanRelease:
		if status == "" {
			return ""
		}
		return fmt.Sprintf("%-19s trace %s batch.size=%d batch.failed=%d%s", s.Name(), tid,
			a[ctxlockotel.AttrBatchSize].AsInt64(), a[ctxlockotel.AttrBatchFailed].AsInt64(), status)
	}
	return ""
}

func seconds(f float64) time.Duration {
	return time.Duration(f * float64(time.Second)).Round(time.Millisecond)
}

// printMetrics scrapes the endpoint as Prometheus would and prints the
// ctxlock series a dashboard starts from.
func printMetrics(p *printer, url string) error {
	body, err := scrape(url)
	if err != nil {
		return err
	}
	p.say("metrics", "from %s (excerpt):", url)
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		for _, prefix := range []string{"ctxlock_contention_total", "ctxlock_wait_duration_seconds_count", "ctxlock_hold_lost_total", "ctxlock_held{"} {
			if strings.HasPrefix(line, prefix) {
				p.say("metrics", "  %s", dropScopeLabels(line))
			}
		}
	}
	return sc.Err()
}

// dropScopeLabels shortens a series line for printing: the otel_scope_*
// labels are the same on every ctxlock series.
func dropScopeLabels(line string) string {
	open, end := strings.IndexByte(line, '{'), strings.LastIndexByte(line, '}')
	if open < 0 || end < open {
		return line
	}
	var kept []string
	for _, l := range strings.Split(line[open+1:end], ",") {
		if !strings.HasPrefix(l, "otel_scope_") {
			kept = append(kept, l)
		}
	}
	return line[:open+1] + strings.Join(kept, ",") + line[end:]
}

// scrape GETs url over a connection it does not keep.
func scrape(url string) (string, error) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", errors.New(resp.Status)
	}
	return string(b), nil
}

func randDuration(lo, hi time.Duration) time.Duration { return lo + rand.N(hi-lo) }

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
