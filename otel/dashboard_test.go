package ctxlockotel

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"
)

const dashboardPath = "dashboards/ctxlock.json"

// promSeries is one Prometheus series name and the labels its samples carry.
type promSeries map[string]map[string]bool

// prometheusNames translates the metrics this package emitted (as collected)
// to the series names and labels the OpenTelemetry Prometheus exporter
// exposes, following the OpenTelemetry–Prometheus compatibility rules with
// suffixes: dots (and other invalid characters) become underscores, the unit
// adds a suffix ("s" → _seconds, annotations such as {lock} add none),
// monotonic sums (counters) get _total, non-monotonic sums (up-down counters)
// are gauges without suffix, histograms expose _bucket (with label le), _sum
// and _count. Attribute keys become labels the same way.
func prometheusNames(t *testing.T, rm metricdata.ResourceMetrics) promSeries {
	t.Helper()
	out := promSeries{}
	add := func(name string, labels map[string]bool) {
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		maps.Copy(out[name], labels)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			base := promSanitize(m.Name)
			switch {
			case m.Unit == "s":
				base += "_seconds"
			case strings.HasPrefix(m.Unit, "{") && strings.HasSuffix(m.Unit, "}"), m.Unit == "":
			default:
				t.Fatalf("%s: unit %q has no translation in this test: extend prometheusNames", m.Name, m.Unit)
			}
			labels := map[string]bool{}
			collect := func(s attribute.Set) {
				for _, kv := range s.ToSlice() {
					labels[promSanitize(string(kv.Key))] = true
				}
			}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					collect(dp.Attributes)
				}
				if d.IsMonotonic {
					add(base+"_total", labels)
				} else {
					add(base, labels)
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					collect(dp.Attributes)
				}
				add(base+"_sum", labels)
				add(base+"_count", labels)
				labels["le"] = true
				add(base+"_bucket", labels)
			case metricdata.Histogram[int64]:
				for _, dp := range d.DataPoints {
					collect(dp.Attributes)
				}
				add(base+"_sum", labels)
				add(base+"_count", labels)
				labels["le"] = true
				add(base+"_bucket", labels)
			default:
				t.Fatalf("%s: data %T has no translation in this test", m.Name, m.Data)
			}
		}
	}
	return out
}

var promInvalid = regexp.MustCompile(`[^a-zA-Z0-9_:]`)

func promSanitize(s string) string { return promInvalid.ReplaceAllString(s, "_") }

func TestPrometheusTranslation(t *testing.T) {
	names := prometheusNames(t, exerciseDashboard(t).collect(t))
	for _, want := range []string{
		"ctxlock_acquire_duration_seconds_bucket",
		"ctxlock_wait_duration_seconds_bucket",
		"ctxlock_contention_total",
		"ctxlock_held",
		"ctxlock_hold_duration_seconds_bucket",
		"ctxlock_hold_lost_total",
		"ctxlock_refresh_batch_size_bucket",
		"ctxlock_batch_duration_seconds_count",
		"ctxlock_release_pending",
	} {
		if names[want] == nil {
			t.Errorf("no series %s among %v", want, slices.Sorted(maps.Keys(names)))
		}
	}
	if !names["ctxlock_hold_lost_total"]["ctxlock_hold_end_reason"] {
		t.Error("ctxlock_hold_lost_total lacks the ctxlock_hold_end_reason label")
	}
}

// exerciseDashboard records into every instrument with every attribute,
// error.type included.
func exerciseDashboard(t *testing.T) *harness {
	h := exerciseAll(t)
	_, a := h.inst.StartAcquire(context.Background(), nil, false, "k")
	a.End(OutcomeError, 0, errors.New("ctxlock: invalid key"))
	_, b := h.inst.StartBatch(context.Background(), OpRelease, 1)
	b.End(1, errors.New("ctxlock: backend unavailable"))
	h.inst.HoldEnded(trace.SpanContext{}, "k", time.Second, ReasonExpired, nil)
	return h
}

// promQuery is one PromQL expression found in the dashboard, with where.
type promQuery struct{ where, expr string }

// dashboardQueries returns every PromQL expression of the dashboard: panel
// targets' expr and the template variables' queries.
func dashboardQueries(t *testing.T) ([]promQuery, []string) {
	t.Helper()
	data, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	var queries []promQuery
	var legends []string
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				p := path + "." + k
				switch s, isString := x.(string); {
				case isString && k == "expr":
					queries = append(queries, promQuery{p, s})
				case isString && k == "legendFormat":
					legends = append(legends, s)
				case isString && k == "query" && strings.Contains(path, "templating") && strings.Contains(s, "("):
					queries = append(queries, promQuery{p, s})
				default:
					walk(p, x)
				}
			}
		case []any:
			for _, x := range v {
				walk(path+"[]", x)
			}
		}
	}
	walk("", dash)
	if len(queries) == 0 {
		t.Fatal("no PromQL expressions found in the dashboard")
	}
	return queries, legends
}

var (
	labelValuesRE = regexp.MustCompile(`^\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)
	matcherRE     = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
	identRE       = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*`)
	aggrClauseRE  = regexp.MustCompile(`^(by|without)\s*\(`)
	legendRE      = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
)

var promKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"group_left": true, "group_right": true, "inf": true, "nan": true,
}

// parsePromQL extracts the metric names and the label names an expression
// uses (in matchers, and in by/without/on/ignoring/group_* clauses). It is a
// small scanner, enough for dashboards: strings and range selectors are
// skipped, identifiers followed by "(" are functions or aggregations.
func parsePromQL(t *testing.T, expr string) (metrics, labels []string) {
	t.Helper()
	if m := labelValuesRE.FindStringSubmatch(expr); m != nil {
		metrics, labels = parsePromQL(t, m[1])
		return metrics, append(labels, m[2])
	}
	s := expr
	for len(s) > 0 {
		c := s[0]
		switch {
		case c == '"' || c == '\'' || c == '`':
			end := 1
			for end < len(s) && s[end] != c {
				if s[end] == '\\' {
					end++
				}
				end++
			}
			s = s[min(end+1, len(s)):]
		case c == '{':
			end := closingBrace(s)
			if end < 0 {
				t.Fatalf("unbalanced { in %q", expr)
			}
			inner := regexp.MustCompile(`"(\\.|[^"\\])*"`).ReplaceAllString(s[1:end], `""`)
			for _, m := range matcherRE.FindAllStringSubmatch(inner, -1) {
				labels = append(labels, m[1])
			}
			s = s[end+1:]
		case c == '[':
			end := strings.IndexByte(s, ']')
			if end < 0 {
				t.Fatalf("unbalanced [ in %q", expr)
			}
			s = s[end+1:]
		case c >= '0' && c <= '9' || c == '.':
			i := 0
			for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.' || s[i] == 'e') {
				i++
			}
			s = s[i:]
		default:
			id := identRE.FindString(s)
			if id == "" {
				s = s[1:]
				continue
			}
			s = s[len(id):]
			rest := strings.TrimLeft(s, " \t\n")
			switch {
			case id == "by" || id == "without" || id == "on" || id == "ignoring" || id == "group_left" || id == "group_right":
				if strings.HasPrefix(rest, "(") {
					end := strings.IndexByte(rest, ')')
					for _, l := range strings.Split(rest[1:end], ",") {
						if l = strings.TrimSpace(l); l != "" {
							labels = append(labels, l)
						}
					}
					s = rest[end+1:]
				}
			case strings.HasPrefix(rest, "("): // function or aggregation
			case aggrClauseRE.MatchString(rest): // aggregation: sum by (...) (...)
			case promKeywords[strings.ToLower(id)]:
			default:
				metrics = append(metrics, id)
			}
		}
	}
	return metrics, labels
}

// closingBrace returns the index of the "}" closing the "{" at s[0], skipping
// quoted label values; -1 if none.
func closingBrace(s string) int {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '}':
			return i
		case '"', '\'':
			q := s[i]
			for i++; i < len(s) && s[i] != q; i++ {
				if s[i] == '\\' {
					i++
				}
			}
		}
	}
	return -1
}

func TestParsePromQL(t *testing.T) {
	m, l := parsePromQL(t, `histogram_quantile(0.99, sum by (le, ctxlock_key) (rate(ctxlock_wait_duration_seconds_bucket{ctxlock_backend=~"$backend", x!="a}b"}[$__rate_interval]))) / on(ctxlock_key) group_left foo_total`)
	if !slices.Equal(m, []string{"ctxlock_wait_duration_seconds_bucket", "foo_total"}) {
		t.Errorf("metrics %v", m)
	}
	if !slices.Equal(l, []string{"le", "ctxlock_key", "ctxlock_backend", "x", "ctxlock_key"}) {
		t.Errorf("labels %v", l)
	}
	m, l = parsePromQL(t, `label_values(ctxlock_held{ctxlock_backend=~"$b"}, ctxlock_key)`)
	if !slices.Equal(m, []string{"ctxlock_held"}) || !slices.Equal(l, []string{"ctxlock_backend", "ctxlock_key"}) {
		t.Errorf("label_values: %v %v", m, l)
	}
}

// TestDashboardUsesEmittedMetrics checks that every metric in the Grafana
// dashboard's PromQL is the Prometheus translation of an instrument this
// package emits (listed by MetricNames), that every label it uses is one
// those series carry, and that the dashboard charts what the issue asks for.
func TestDashboardUsesEmittedMetrics(t *testing.T) {
	series := prometheusNames(t, exerciseDashboard(t).collect(t))
	// Map each series back to its instrument name, via MetricNames.
	instrumentOf := map[string]string{}
	for _, name := range MetricNames() {
		base := promSanitize(name)
		for s := range series {
			if strings.HasPrefix(s, base+"_") || s == base {
				instrumentOf[s] = name
			}
		}
	}
	queries, legends := dashboardQueries(t)
	used := map[string]bool{}
	allLabels := map[string]bool{}
	for _, q := range queries {
		metrics, labels := parsePromQL(t, q.expr)
		if len(metrics) == 0 {
			t.Errorf("%s: no metric in %q", q.where, q.expr)
		}
		carried := map[string]bool{}
		for _, m := range metrics {
			if series[m] == nil {
				t.Errorf("%s: metric %q is not the Prometheus name of any instrument this package emits (%v)", q.where, m, slices.Sorted(maps.Keys(series)))
				continue
			}
			if instrumentOf[m] == "" {
				t.Errorf("%s: series %q maps to no name in MetricNames()", q.where, m)
			}
			used[m] = true
			maps.Copy(carried, series[m])
		}
		for _, l := range labels {
			if !carried[l] {
				t.Errorf("%s: label %q is not carried by %v", q.where, l, metrics)
			}
			allLabels[l] = true
		}
	}
	for _, lf := range legends {
		for _, m := range legendRE.FindAllStringSubmatch(lf, -1) {
			if !allLabels[m[1]] {
				t.Errorf("legend %q uses label %q that no query groups by", lf, m[1])
			}
		}
	}

	// What the issue asks the dashboard to chart.
	wants := []struct{ what, pattern string }{
		{"contention rate by key", `rate\(ctxlock_contention_total\{[^}]*\}\[[^]]*\]\)`},
		{"contention by key", `by \([^)]*ctxlock_key[^)]*\) \(rate\(ctxlock_contention_total`},
		{"wait p99", `histogram_quantile\(0\.99, sum by \(le[^)]*\) \(rate\(ctxlock_wait_duration_seconds_bucket`},
		{"held locks", `\(ctxlock_held\{`},
		{"losses by reason", `by \(ctxlock_hold_end_reason\) \(increase\(ctxlock_hold_lost_total`},
	}
	for _, w := range wants {
		re := regexp.MustCompile(w.pattern)
		if !slices.ContainsFunc(queries, func(q promQuery) bool { return re.MatchString(q.expr) }) {
			t.Errorf("the dashboard does not chart %s (no query matches %s)", w.what, w.pattern)
		}
	}
	// Every instrument appears on the dashboard.
	charted := map[string]bool{}
	for s := range used {
		charted[instrumentOf[s]] = true
	}
	for _, name := range MetricNames() {
		if !charted[name] {
			t.Errorf("instrument %s is not charted on the dashboard", name)
		}
	}
}
