package ctxlockotel_test

// The documentation tables against what the instrumentation emits: the span,
// event and metric tables of otel/README.md and the list of names in the root
// README.md are parsed, a real Manager on the in-memory backend is driven
// through every documented situation inside a testing/synctest bubble (fake
// time: waits of seconds take no time), and every name, instrument kind,
// unit, Prometheus series and attribute key documented must be what was
// emitted, and the other way round.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
	ctxlockotel "github.com/ctxlock/ctxlock/otel"
)

// mdTable is one markdown table: its header cells and rows of cells.
type mdTable struct {
	header []string
	rows   [][]string
}

var mdSeparator = regexp.MustCompile(`^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$`)

// mdTables returns the tables of a markdown text. A table is a line starting
// with "|" followed by a separator line (| --- | ---: |), then its rows.
// An escaped \| stays in its cell.
func mdTables(text string) []mdTable {
	lines := strings.Split(text, "\n")
	var out []mdTable
	for i := 0; i+1 < len(lines); i++ {
		head := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(head, "|") || !mdSeparator.MatchString(strings.TrimSpace(lines[i+1])) {
			continue
		}
		t := mdTable{header: mdCells(head)}
		j := i + 2
		for ; j < len(lines) && strings.HasPrefix(strings.TrimSpace(lines[j]), "|"); j++ {
			t.rows = append(t.rows, mdCells(strings.TrimSpace(lines[j])))
		}
		out = append(out, t)
		i = j - 1
	}
	return out
}

func mdCells(line string) []string {
	line = strings.ReplaceAll(line, `\|`, "\x00")
	line = strings.TrimPrefix(strings.TrimSuffix(line, "|"), "|")
	cells := strings.Split(line, "|")
	for i, c := range cells {
		cells[i] = strings.TrimSpace(strings.ReplaceAll(c, "\x00", "|"))
	}
	return cells
}

// column returns the index of the header cell named name (case-insensitive).
func (t mdTable) column(name string) int {
	return slices.IndexFunc(t.header, func(h string) bool { return strings.EqualFold(h, name) })
}

var (
	backticked = regexp.MustCompile("`([^`]+)`")
	// a backticked name and the footnote marker right after it, if any
	backtickedMarked = regexp.MustCompile("`([^`]+)`([¹²³⁴⁵⁶⁷⁸⁹]?)")
	parenGroup       = regexp.MustCompile(`\([^()]*\)`)
	// `key`=`value`: a value constraint on a documented attribute
	keyEqualsValue = regexp.MustCompile("`([^`]+)`\\s*=\\s*`([^`]+)`")
	// a footnote's text: a marker at the start of a line or after a space
	// (ending on a non-space, so that the space before the next marker is
	// left for it)
	footnoteText = regexp.MustCompile(`(?m)(?:^|\s)([¹²³⁴⁵⁶⁷⁸⁹])\s+([^¹²³⁴⁵⁶⁷⁸⁹]*[^¹²³⁴⁵⁶⁷⁸⁹\s])`)
	eventAttr    = regexp.MustCompile("attrs? `([^`]+)`")
)

// firstName returns the first backticked name of a first-column cell.
func firstName(t *testing.T, cell string) string {
	t.Helper()
	m := backticked.FindStringSubmatch(cell)
	if m == nil {
		t.Fatalf("table row %q: first column has no `name`", cell)
	}
	return m[1]
}

func stripParens(s string) string {
	for {
		r := parenGroup.ReplaceAllString(s, "")
		if r == s {
			return s
		}
		s = r
	}
}

// docAttrs are the attribute keys documented for one span or metric: each
// key says whether it is conditional (a footnote "only ..."), and some have
// a documented value.
type docAttrs struct {
	conditional map[string]bool // key → present only sometimes
	values      map[string]string
}

func newDocAttrs() docAttrs {
	return docAttrs{conditional: map[string]bool{}, values: map[string]string{}}
}

// docTables is what otel/README.md documents.
type docTables struct {
	spans      map[string]docAttrs
	spanOrder  []string
	events     map[string][]string // event → spans it is on ("any" for any)
	eventAttrs map[string][]string
	metrics    map[string]docMetric
	fullKeys   []string // "Attribute keys in full"
}

type docMetric struct {
	instrument, unit string
	attrs            docAttrs
	series           []string
}

// conditionalFootnotes returns the footnote markers whose text starts with
// "only" (only when acquired, only on failure): attributes so marked are not
// on every span or data point.
func conditionalFootnotes(text string) map[string]bool {
	out := map[string]bool{}
	for _, m := range footnoteText.FindAllStringSubmatch(text, -1) {
		if strings.HasPrefix(strings.TrimSpace(m[2]), "only") {
			out[m[1]] = true
		}
	}
	return out
}

func parseOtelReadme(t *testing.T, text string) docTables {
	t.Helper()
	cond := conditionalFootnotes(text)
	d := docTables{
		spans: map[string]docAttrs{}, events: map[string][]string{},
		eventAttrs: map[string][]string{}, metrics: map[string]docMetric{},
	}
	var spanT, eventT, metricT *mdTable
	for _, tb := range mdTables(text) {
		switch {
		case strings.EqualFold(tb.header[0], "span"):
			spanT = &tb
		case strings.EqualFold(tb.header[0], "event"):
			eventT = &tb
		case strings.EqualFold(tb.header[0], "name") && tb.column("instrument") >= 0:
			metricT = &tb
		}
	}
	if spanT == nil || eventT == nil || metricT == nil {
		t.Fatalf("otel/README.md: span table found %v, event table %v, metric table %v", spanT != nil, eventT != nil, metricT != nil)
	}

	// Spans: attributes are backticked; "same as `x`" and "as above" copy
	// another row's; parenthesized text and `k`=`v` values are not keys.
	ac := spanT.column("attributes")
	if ac < 0 {
		t.Fatal("span table has no attributes column")
	}
	for _, row := range spanT.rows {
		name := firstName(t, row[0])
		cell := row[ac]
		attrs := newDocAttrs()
		if m := regexp.MustCompile("same as `([^`]+)`").FindStringSubmatch(cell); m != nil {
			src, ok := d.spans[m[1]]
			if !ok {
				t.Fatalf("span %s: attributes %q refer to an undocumented span", name, cell)
			}
			maps.Copy(attrs.conditional, src.conditional)
			cell = strings.Replace(cell, m[0], "", 1)
		}
		if strings.HasPrefix(strings.ToLower(cell), "as above") {
			if len(d.spanOrder) == 0 {
				t.Fatalf("span %s: %q on the first row", name, cell)
			}
			maps.Copy(attrs.conditional, d.spans[d.spanOrder[len(d.spanOrder)-1]].conditional)
		}
		cell = stripParens(cell)
		for _, m := range keyEqualsValue.FindAllStringSubmatch(cell, -1) {
			attrs.values[m[1]] = m[2]
		}
		cell = regexp.MustCompile("=\\s*`[^`]*`").ReplaceAllString(cell, "")
		for _, m := range backtickedMarked.FindAllStringSubmatch(cell, -1) {
			attrs.conditional[m[1]] = cond[m[2]]
		}
		if len(attrs.conditional) == 0 {
			t.Fatalf("span %s: no attributes parsed from %q", name, row[ac])
		}
		d.spans[name] = attrs
		d.spanOrder = append(d.spanOrder, name)
	}

	// Events: the span column names spans (backticked) or says "any"; the
	// meaning names the event's attributes as "attr `k`".
	sc, mc := eventT.column("on span"), eventT.column("meaning")
	if sc < 0 || mc < 0 {
		t.Fatalf("event table header %q: want columns \"on span\" and \"meaning\"", eventT.header)
	}
	for _, row := range eventT.rows {
		name := firstName(t, row[0])
		var on []string
		if strings.EqualFold(strings.TrimSpace(row[sc]), "any") {
			on = []string{"any"}
		} else {
			for _, m := range backticked.FindAllStringSubmatch(row[sc], -1) {
				if _, ok := d.spans[m[1]]; !ok {
					t.Errorf("event %s: on span %q, which the span table does not list", name, m[1])
				}
				on = append(on, m[1])
			}
		}
		if len(on) == 0 {
			t.Errorf("event %s: \"on span\" cell %q names no `span` (nor says any)", name, row[sc])
		}
		d.events[name] = on
		for _, m := range eventAttr.FindAllStringSubmatch(row[mc], -1) {
			d.eventAttrs[name] = append(d.eventAttrs[name], m[1])
		}
	}

	// "Attribute keys in full: `a`, `b`, ... (Prometheus labels ...)": the
	// full keys the metric table's short names stand for.
	i := strings.Index(text, "Attribute keys in full")
	if i < 0 {
		t.Fatal(`otel/README.md has no "Attribute keys in full" sentence`)
	}
	sentence := text[i:]
	if j := strings.Index(sentence, "("); j >= 0 {
		sentence = sentence[:j]
	}
	if j := strings.Index(sentence, "\n\n"); j >= 0 {
		sentence = sentence[:j]
	}
	for _, m := range backticked.FindAllStringSubmatch(sentence, -1) {
		d.fullKeys = append(d.fullKeys, m[1])
	}
	fullKey := func(metric, short string) string {
		var found []string
		for _, k := range d.fullKeys {
			if k == short || strings.HasSuffix(k, "."+short) {
				found = append(found, k)
			}
		}
		if len(found) != 1 {
			t.Errorf("metric %s: attribute %q stands for %v among the full keys %v, want exactly one", metric, short, found, d.fullKeys)
			return short
		}
		return found[0]
	}

	ic, uc, atc, pc := metricT.column("instrument"), metricT.column("unit"), metricT.column("attributes"), metricT.column("Prometheus series")
	if ic < 0 || uc < 0 || atc < 0 || pc < 0 {
		t.Fatalf("metric table header %q: want instrument, unit, attributes, Prometheus series", metricT.header)
	}
	for _, row := range metricT.rows {
		name := firstName(t, row[0])
		m := docMetric{instrument: strings.Trim(row[ic], "` "), unit: strings.Trim(row[uc], "` "), attrs: newDocAttrs()}
		for part := range strings.SplitSeq(stripParens(row[atc]), ",") {
			part = strings.Trim(strings.TrimSpace(part), "`")
			if part == "" {
				continue
			}
			marker := ""
			if r := []rune(part); strings.ContainsRune("¹²³⁴⁵⁶⁷⁸⁹", r[len(r)-1]) {
				marker, part = string(r[len(r)-1]), strings.Trim(string(r[:len(r)-1]), "`")
			}
			m.attrs.conditional[fullKey(name, part)] = cond[marker]
		}
		for _, s := range backticked.FindAllStringSubmatch(row[pc], -1) {
			m.series = append(m.series, expandBraces(s[1])...)
		}
		d.metrics[name] = m
	}
	return d
}

// expandBraces expands one {a,b,c} group: x_{a,b} → x_a, x_b.
func expandBraces(s string) []string {
	i, j := strings.Index(s, "{"), strings.Index(s, "}")
	if i < 0 || j < i {
		return []string{s}
	}
	var out []string
	for alt := range strings.SplitSeq(s[i+1:j], ",") {
		out = append(out, s[:i]+strings.TrimSpace(alt)+s[j+1:])
	}
	return out
}

// rootReadmeNames returns the span and metric names the root README.md
// lists in its Observability section: backticked names before the word
// "metrics" are spans, after it metrics.
func rootReadmeNames(t *testing.T, text string) (spans, metrics []string) {
	t.Helper()
	i := strings.Index(text, "## Observability")
	if i < 0 {
		t.Fatal("README.md has no Observability section")
	}
	sec := text[i+len("## Observability"):]
	if j := strings.Index(sec, "\n## "); j >= 0 {
		sec = sec[:j]
	}
	k := strings.Index(sec, "metrics")
	if k < 0 {
		t.Fatal("README.md Observability section does not list metrics")
	}
	for _, m := range backticked.FindAllStringSubmatchIndex(sec, -1) {
		name := sec[m[2]:m[3]]
		if !strings.HasPrefix(name, "ctxlock.") {
			continue
		}
		if m[0] < k {
			spans = append(spans, name)
		} else {
			metrics = append(metrics, name)
		}
	}
	return spans, metrics
}

func TestDocTableParser(t *testing.T) {
	text := strings.Join([]string{
		"|span|attributes|",
		"|---|:---:|",
		"|`a.b` (x)|`k1`, `k2`³ (`no.key`), `op`=`v`|",
		"|`a.c`|as above|",
		"",
		"| event | on span | meaning |",
		"|-----|-----|-----|",
		"| `e` | `a.b` | foo (attr `k1`) |",
		"",
		"| name | instrument | unit | attributes | Prometheus series |",
		"| --- | --- | --- | --- | --- |",
		"| `m` | Int64Counter | `{x}` | k1, op (`a`\\|`b`), k2³ | `m_{total,x}` |",
		"",
		"³ only on failure.",
		"Attribute keys in full: `p.k1`, `p.k2`, `p.op` (labels).",
	}, "\n")
	d := parseOtelReadme(t, text)
	want := map[string]bool{"k1": false, "k2": true, "op": false}
	if !maps.Equal(d.spans["a.b"].conditional, want) || !maps.Equal(d.spans["a.c"].conditional, want) {
		t.Errorf("spans %v", d.spans)
	}
	if d.spans["a.b"].values["op"] != "v" {
		t.Errorf("span a.b values %v", d.spans["a.b"].values)
	}
	if !slices.Equal(d.events["e"], []string{"a.b"}) || !slices.Equal(d.eventAttrs["e"], []string{"k1"}) {
		t.Errorf("events %v attrs %v", d.events, d.eventAttrs)
	}
	m := d.metrics["m"]
	if m.instrument != "Int64Counter" || m.unit != "{x}" || !slices.Equal(m.series, []string{"m_total", "m_x"}) ||
		!maps.Equal(m.attrs.conditional, map[string]bool{"p.k1": false, "p.op": false, "p.k2": true}) {
		t.Errorf("metric %+v", m)
	}
}

// emitted is what the instrumentation recorded over all the scenarios.
type emitted struct {
	spans []sdktrace.ReadOnlySpan
	rm    metricdata.ResourceMetrics
}

// driveEverySituation runs a Manager through every documented situation on
// the in-memory backend: Lock uncontended, Lock contended (on another
// Manager's holder and behind a local one), TryLock held, refresh batches,
// a hold lost, a hold expired, releases pending and failing while the store
// is down, then confirmed, and the error outcomes (invalid key and option,
// canceled with and without a backend fault, closed).
func driveEverySituation(t *testing.T) emitted {
	var out emitted
	synctest.Test(t, func(t *testing.T) {
		sr := tracetest.NewSpanRecorder()
		reader := sdkmetric.NewManualReader()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		be := memory.New()
		var managers []*ctxlock.Manager
		newManager := func() *ctxlock.Manager {
			m := ctxlock.NewManager(be, ctxlock.WithTracerProvider(tp), ctxlock.WithMeterProvider(mp))
			managers = append(managers, m)
			return m
		}
		// Should a step fail, still end every goroutine of the bubble (a
		// second Close returns nil at once after the first).
		defer func() {
			be.SetUnavailable(false)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for _, m := range managers {
				m.Close(ctx)
			}
			be.Close()
			tp.Shutdown(ctx)
			mp.Shutdown(ctx)
		}()
		m1, m2 := newManager(), newManager()
		ctx := context.Background()
		opts := []ctxlock.LockOption{ctxlock.WithTTL(3 * time.Second), ctxlock.WithRefreshInterval(time.Second)}
		lock := func(l ctxlock.Lock) <-chan struct{} {
			t.Helper()
			expired, err := l.Lock(ctx)
			if err != nil {
				t.Fatalf("Lock %s: %v", l.Key(), err)
			}
			return expired
		}
		unlock := func(l ctxlock.Lock) {
			t.Helper()
			if err := l.Unlock(); err != nil {
				t.Fatalf("Unlock %s: %v", l.Key(), err)
			}
		}

		// Uncontended Lock and TryLock, Unlock: background release batches.
		a := m1.NewLock("a", opts...)
		lock(a)
		unlock(a)
		synctest.Wait()
		if ok, _, err := a.TryLock(ctx); !ok || err != nil {
			t.Fatalf("TryLock on a free key = %v, %v; want true, nil", ok, err)
		}
		unlock(a)
		synctest.Wait()

		// Contended: m2 waits for m1's holder, a second m1 Lock queues
		// behind it locally, a TryLock from m2 finds it held, a Lock with a
		// deadline gives up (canceled, no fault).
		holder := m1.NewLock("b", opts...)
		lock(holder)
		var wg sync.WaitGroup
		for _, m := range []*ctxlock.Manager{m2, m1} {
			l := m.NewLock("b", opts...)
			wg.Go(func() {
				if _, err := l.Lock(ctx); err != nil {
					t.Errorf("waiter: %v", err)
					return
				}
				time.Sleep(100 * time.Millisecond)
				if err := l.Unlock(); err != nil {
					t.Errorf("waiter: %v", err)
				}
			})
		}
		synctest.Wait()
		if ok, _, err := m2.NewLock("b", opts...).TryLock(ctx); ok || err != nil {
			t.Fatalf("TryLock on a held key = %v, %v; want false, nil", ok, err)
		}
		dctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		if _, err := m2.NewLock("b", opts...).Lock(dctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Lock with a deadline on a held key: %v, want DeadlineExceeded", err)
		}
		cancel()
		// Held past a few refresh intervals: refresh batches.
		time.Sleep(2500 * time.Millisecond)
		unlock(holder)
		wg.Wait()
		synctest.Wait()

		// Lost: the store forgets the holder; the next refresh finds out.
		lost := m1.NewLock("lost", opts...)
		expired := lock(lost)
		be.Evict("lost")
		<-expired
		if err := lost.Err(); !errors.Is(err, ctxlock.ErrLost) {
			t.Fatalf("Err after Evict = %v, want ErrLost", err)
		}

		// Expired, failing refresh and release batches, pending releases,
		// a Lock that gives up while the store is down (canceled with a
		// fault joined).
		exp := m1.NewLock("expired", opts...)
		unlockedDown := m1.NewLock("unlocked-down", opts...)
		expired = lock(exp)
		lock(unlockedDown)
		be.SetUnavailable(true)
		unlock(unlockedDown)
		dctx, cancel = context.WithTimeout(ctx, time.Second)
		if _, err := m2.NewLock("down", opts...).Lock(dctx); !errors.Is(err, ctxlock.ErrUnavailable) {
			t.Fatalf("Lock while the store is down: %v, want ErrUnavailable joined", err)
		}
		cancel()
		<-expired
		if err := exp.Err(); !errors.Is(err, ctxlock.ErrExpired) {
			t.Fatalf("Err = %v, want ErrExpired", err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		be.SetUnavailable(false)
		time.Sleep(5 * time.Second)
		synctest.Wait()

		// Errors: invalid key, invalid option, and a closed Manager.
		if _, err := m1.NewLock("").Lock(ctx); !errors.Is(err, ctxlock.ErrInvalidKey) {
			t.Fatalf("Lock with an empty key: %v, want ErrInvalidKey", err)
		}
		if _, _, err := m1.NewLock("x", ctxlock.WithTTL(-1)).TryLock(ctx); !errors.Is(err, ctxlock.ErrInvalidOption) {
			t.Fatalf("TryLock with a negative TTL: %v, want ErrInvalidOption", err)
		}
		m3 := newManager()
		closing := m3.NewLock("closing", opts...)
		lock(closing)
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		for _, m := range []*ctxlock.Manager{m1, m2, m3} {
			if err := m.Close(cctx); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
		if _, err := m3.NewLock("closed").Lock(ctx); !errors.Is(err, ctxlock.ErrClosed) {
			t.Fatalf("Lock on a closed Manager: %v, want ErrClosed", err)
		}

		if err := reader.Collect(ctx, &out.rm); err != nil {
			t.Fatal(err)
		}
		out.spans = sr.Ended()
	})
	return out
}

// instrumentKind names the instrument behind collected data as the API does.
func instrumentKind(d metricdata.Aggregation) string {
	switch d := d.(type) {
	case metricdata.Histogram[float64]:
		return "Float64Histogram"
	case metricdata.Histogram[int64]:
		return "Int64Histogram"
	case metricdata.Sum[int64]:
		if d.IsMonotonic {
			return "Int64Counter"
		}
		return "Int64UpDownCounter"
	case metricdata.Sum[float64]:
		if d.IsMonotonic {
			return "Float64Counter"
		}
		return "Float64UpDownCounter"
	case metricdata.Gauge[int64]:
		return "Int64Gauge"
	case metricdata.Gauge[float64]:
		return "Float64Gauge"
	}
	return fmt.Sprintf("%T", d)
}

// pointAttrs returns the attribute sets of a metric's data points.
func pointAttrs(d metricdata.Aggregation) []attribute.Set {
	var out []attribute.Set
	switch d := d.(type) {
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes)
		}
	case metricdata.Histogram[int64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes)
		}
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes)
		}
	case metricdata.Sum[float64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes)
		}
	}
	return out
}

// checkAttrs compares the attribute sets of one span name or metric with
// its documentation: no undocumented key on any, every unconditional key on
// each, every conditional key on at least one, documented values kept. Each
// problem is reported once, with one example.
func checkAttrs(t *testing.T, what string, doc docAttrs, sets [][]attribute.KeyValue) {
	t.Helper()
	seen := map[string]bool{}
	reported := map[string]bool{}
	report := func(problem string, example []attribute.KeyValue) {
		if !reported[problem] {
			reported[problem] = true
			t.Errorf("%s: %s (e.g. %v)", what, problem, example)
		}
	}
	for _, kvs := range sets {
		have := map[string]attribute.Value{}
		for _, kv := range kvs {
			have[string(kv.Key)] = kv.Value
			seen[string(kv.Key)] = true
		}
		for k := range have {
			if _, ok := doc.conditional[k]; !ok {
				report(fmt.Sprintf("emitted attribute %s is not documented (documented: %v)", k, slices.Sorted(maps.Keys(doc.conditional))), kvs)
			}
		}
		for k, cond := range doc.conditional {
			if _, ok := have[k]; !ok && !cond {
				report(fmt.Sprintf("documented attribute %s (not marked conditional) is missing", k), kvs)
			}
		}
		for k, v := range doc.values {
			if got, ok := have[k]; ok && got.String() != v {
				report(fmt.Sprintf("attribute %s = %q, documented %q", k, got.String(), v), kvs)
			}
		}
	}
	for k := range doc.conditional {
		if !seen[k] {
			t.Errorf("%s: documented attribute %s never emitted", what, k)
		}
	}
}

func TestDocTablesMatchEmitted(t *testing.T) {
	got := driveEverySituation(t)
	if t.Failed() {
		return // what was emitted is incomplete
	}
	raw, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := parseOtelReadme(t, string(raw))
	root, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rootSpans, rootMetrics := rootReadmeNames(t, string(root))

	// Spans and their events.
	spans := map[string][][]attribute.KeyValue{}
	events := map[string]map[string]bool{} // event → spans it was on
	eventSets := map[string][][]attribute.KeyValue{}
	for _, s := range got.spans {
		if s.InstrumentationScope().Name != ctxlockotel.ScopeName {
			continue
		}
		spans[s.Name()] = append(spans[s.Name()], s.Attributes())
		for _, e := range s.Events() {
			if events[e.Name] == nil {
				events[e.Name] = map[string]bool{}
			}
			events[e.Name][s.Name()] = true
			eventSets[e.Name] = append(eventSets[e.Name], e.Attributes)
		}
	}
	if g, w := slices.Sorted(maps.Keys(spans)), slices.Sorted(maps.Keys(doc.spans)); !slices.Equal(g, w) {
		t.Errorf("span names: emitted %v, otel/README.md documents %v", g, w)
	}
	for name, sets := range spans {
		if d, ok := doc.spans[name]; ok {
			checkAttrs(t, "span "+name, d, sets)
		}
	}
	if g, w := slices.Sorted(maps.Keys(events)), slices.Sorted(maps.Keys(doc.events)); !slices.Equal(g, w) {
		t.Errorf("event names: emitted %v, otel/README.md documents %v", g, w)
	}
	for name, on := range events {
		docOn, ok := doc.events[name]
		if !ok || slices.Equal(docOn, []string{"any"}) {
			continue
		}
		if g, w := slices.Sorted(maps.Keys(on)), slices.Sorted(slices.Values(docOn)); !slices.Equal(g, w) {
			t.Errorf("event %s: emitted on spans %v, documented on %v", name, g, w)
		}
		// The exception event's attributes are the SDK's (semantic
		// conventions); the package's own events carry what the table says.
		d := newDocAttrs()
		for _, k := range doc.eventAttrs[name] {
			d.conditional[k] = false
		}
		checkAttrs(t, "event "+name, d, eventSets[name])
	}

	// Metrics: names, kinds, units, attributes, Prometheus series.
	metrics := map[string]metricdata.Metrics{}
	for _, sm := range got.rm.ScopeMetrics {
		if sm.Scope.Name != ctxlockotel.ScopeName {
			continue
		}
		for _, m := range sm.Metrics {
			metrics[m.Name] = m
		}
	}
	if g, w := slices.Sorted(maps.Keys(metrics)), slices.Sorted(maps.Keys(doc.metrics)); !slices.Equal(g, w) {
		t.Errorf("metric names: emitted %v, otel/README.md documents %v", g, w)
	}
	if g, w := slices.Sorted(maps.Keys(doc.metrics)), slices.Sorted(slices.Values(ctxlockotel.MetricNames())); !slices.Equal(g, w) {
		t.Errorf("metric names: otel/README.md documents %v, MetricNames() %v", g, w)
	}
	metricKeys := map[string]bool{}
	for name, m := range metrics {
		d, ok := doc.metrics[name]
		if !ok {
			continue
		}
		if k := instrumentKind(m.Data); k != d.instrument {
			t.Errorf("metric %s: instrument %s, documented %s", name, k, d.instrument)
		}
		if m.Unit != d.unit {
			t.Errorf("metric %s: unit %q, documented %q", name, m.Unit, d.unit)
		}
		var sets [][]attribute.KeyValue
		for _, s := range pointAttrs(m.Data) {
			sets = append(sets, s.ToSlice())
		}
		checkAttrs(t, "metric "+name, d.attrs, sets)
		for k := range d.attrs.conditional {
			metricKeys[k] = true
		}
		one := metricdata.ResourceMetrics{ScopeMetrics: []metricdata.ScopeMetrics{{Metrics: []metricdata.Metrics{m}}}}
		series := ctxlockotel.PrometheusSeries(t, one)
		if g, w := slices.Sorted(maps.Keys(series)), slices.Sorted(slices.Values(d.series)); !slices.Equal(g, w) {
			t.Errorf("metric %s: Prometheus series %v, documented %v", name, g, w)
		}
	}
	if g, w := slices.Sorted(maps.Keys(metricKeys)), slices.Sorted(slices.Values(doc.fullKeys)); !slices.Equal(g, w) {
		t.Errorf(`"Attribute keys in full" lists %v; the metric table's attributes are %v`, w, g)
	}

	// The root README.md lists the same names.
	if g, w := slices.Sorted(slices.Values(rootSpans)), slices.Sorted(maps.Keys(doc.spans)); !slices.Equal(g, w) {
		t.Errorf("README.md lists spans %v, otel/README.md %v", g, w)
	}
	if g, w := slices.Sorted(slices.Values(rootMetrics)), slices.Sorted(maps.Keys(doc.metrics)); !slices.Equal(g, w) {
		t.Errorf("README.md lists metrics %v, otel/README.md %v", g, w)
	}
}
