package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	ctxlockotel "github.com/ctxlock/ctxlock/otel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// dashboardMetrics returns every metric name the Grafana dashboard's PromQL
// uses.
func dashboardMetrics(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("../../otel/dashboards/ctxlock.json")
	if err != nil {
		t.Fatal(err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || k == "query") {
					exprs = append(exprs, s)
				} else {
					walk(x)
				}
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	var dash any
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	walk(dash)
	names := map[string]bool{}
	re := regexp.MustCompile(`\bctxlock_[a-zA-Z0-9_]+\b`)
	for _, e := range exprs {
		// Drop quoted label values and label matchers: only metric names remain.
		e = regexp.MustCompile(`\{[^}]*\}`).ReplaceAllString(e, "{}")
		e = regexp.MustCompile(`(by|without|on|ignoring)\s*\([^)]*\)`).ReplaceAllString(e, "")
		for _, m := range re.FindAllString(e, -1) {
			if strings.HasPrefix(m, "ctxlock_key") || strings.HasPrefix(m, "ctxlock_backend") {
				continue // label_values(..., ctxlock_key)
			}
			names[m] = true
		}
	}
	if len(names) == 0 {
		t.Fatal("no ctxlock metric found in the dashboard")
	}
	out := make([]string, 0, len(names))
	for n := range names {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// TestScenarioServesDashboardMetrics runs the example in-process for a short
// while, scrapes its Prometheus endpoint over loopback and checks that every
// metric the dashboard queries is exported, under that name.
func TestOtelExampleServesDashboardMetrics(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	var body string
	var scrapeErr error
	cfg := config{
		duration: 2 * time.Second,
		traces:   "summary",
		sample:   1,
		out:      &out,
		listener: ln,
		beforeExit: func(url string) {
			if !strings.HasPrefix(url, "http://"+ln.Addr().String()) {
				t.Errorf("metrics URL %s is not on the listener %s", url, ln.Addr())
			}
			body, scrapeErr = scrape(url)
		},
	}
	if err := run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if scrapeErr != nil {
		t.Fatalf("scrape: %v", scrapeErr)
	}

	series := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		series[name] = true
	}
	dash := dashboardMetrics(t)
	t.Logf("the dashboard queries %v", dash)
	for _, name := range dash {
		if !series[name] {
			t.Errorf("the dashboard queries %s, which the endpoint does not export", name)
		}
	}
	// And every instrument shows up, under its Prometheus name.
	for _, inst := range ctxlockotel.MetricNames() {
		base := strings.ReplaceAll(inst, ".", "_")
		if !slices.ContainsFunc(slices.Collect(maps.Keys(series)), func(s string) bool { return strings.HasPrefix(s, base) }) {
			t.Errorf("instrument %s: no series %s* exported", inst, base)
		}
	}
	for _, want := range []string{`ctxlock_key="orders"`, `ctxlock_key="billing"`, `ctxlock_hold_end_reason="lost"`} {
		if !strings.Contains(body, want) {
			t.Errorf("no series with %s", want)
		}
	}

	text := out.String()
	for _, want := range []string{"acquired orders, token", "acquired billing, token", "status ", "waiting:", "LOST billing",
		"ctxlock.acquire", "ctxlock.hold", "curl -s http://" + ln.Addr().String() + "/metrics"} {
		if !strings.Contains(text, want) {
			t.Errorf("the output does not mention %q:\n%s", want, text)
		}
	}
	if t.Failed() {
		t.Logf("scraped:\n%s", body)
	}
}

func TestOtelExampleBadFlags(t *testing.T) {
	for _, cfg := range []config{
		{duration: time.Millisecond, traces: "xml", sample: 1, addr: "127.0.0.1:0"},
		{duration: time.Millisecond, traces: "off", sample: 0, addr: "127.0.0.1:0"},
	} {
		if err := run(context.Background(), cfg); err == nil {
			t.Errorf("run(%+v) = nil, want an error", cfg)
		}
	}
}

func TestOtelExampleJSONTraces(t *testing.T) {
	var out syncBuffer
	cfg := config{duration: 500 * time.Millisecond, traces: "json", sample: 1, out: &out, addr: "127.0.0.1:0"}
	if err := run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	var spans int
	for line := range strings.SplitSeq(out.String(), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var s struct{ Name string }
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			t.Fatalf("not one JSON span per line: %v: %.200s", err, line)
		}
		if s.Name == ctxlockotel.SpanLock {
			spans++
		}
	}
	if spans == 0 {
		t.Errorf("no %s span in the JSON output:\n%s", ctxlockotel.SpanLock, out.String())
	}
}
