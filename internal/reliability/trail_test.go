package reliability_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/locktest"
	"github.com/ctxlock/ctxlock/backends/memory"
	ctxlockotel "github.com/ctxlock/ctxlock/otel"
)

// trail records every Manager's spans, so that a violation can be told
// apart: a Manager that ended a hold too late (or whose backend lost the
// lease early) from a holder that saw its closed expiry channel late. The
// checker's End of an expired hold is when the holder noticed; the hold
// span's end is when the Manager closed the channel.
type trail struct {
	mu   sync.Mutex
	recs map[string]*tracetest.SpanRecorder // by Manager name: "m1" of "m1/g2"
}

// option returns the ManagerOption that traces Manager name into t.
func (t *trail) option(name string) ctxlock.ManagerOption {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.recs == nil {
		t.recs = map[string]*tracetest.SpanRecorder{}
	}
	rec := tracetest.NewSpanRecorder()
	t.recs[name] = rec
	return ctxlock.WithTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
}

// overlapping returns the pairs of holds of one key that overlap.
func overlapping(holds []locktest.Hold) [][2]locktest.Hold {
	byKey := map[string][]locktest.Hold{}
	for _, h := range holds {
		byKey[h.Key] = append(byKey[h.Key], h)
	}
	var out [][2]locktest.Hold
	for _, hs := range byKey {
		slices.SortFunc(hs, func(a, b locktest.Hold) int { return a.Start.Compare(b.Start) })
		for i := 1; i < len(hs); i++ {
			if hs[i].Start.Before(hs[i-1].End) {
				out = append(out, [2]locktest.Hold{hs[i-1], hs[i]})
			}
		}
	}
	return out
}

// explain logs, for every overlap, the Managers' spans of the two holds:
// the acquire span (when the call started and returned, its attempts) and,
// for a hold that was lost or expired, the hold span (when the Manager
// ended it, and why).
func (t *trail) explain(tb testing.TB, holds []locktest.Hold) {
	tb.Helper()
	if t == nil {
		return
	}
	for _, pair := range overlapping(holds) {
		tb.Logf("overlap on %q:", pair[0].Key)
		for _, h := range pair {
			tb.Logf("  checker: %s token %d [%s .. %s]", h.Owner, h.Token, clock(h.Start), clock(h.End))
			for _, line := range t.spansOf(h) {
				tb.Logf("    %s", line)
			}
		}
	}
}

// spansOf describes the spans of hold h in its Manager's recorder.
func (t *trail) spansOf(h locktest.Hold) []string {
	name, _, _ := strings.Cut(h.Owner, "/")
	t.mu.Lock()
	rec := t.recs[name]
	t.mu.Unlock()
	if rec == nil {
		return []string{"(no spans recorded)"}
	}
	spans := rec.Ended()
	var out []string
	for _, s := range spans {
		if s.Name() != ctxlockotel.SpanLock && s.Name() != ctxlockotel.SpanTryLock {
			continue
		}
		if attr(s, ctxlockotel.AttrKey) != h.Key || attr(s, ctxlockotel.AttrFencingToken) != fmt.Sprint(h.Token) {
			continue
		}
		out = append(out, describe(s))
		for _, c := range spans {
			if c.Parent().SpanID() == s.SpanContext().SpanID() {
				out = append(out, "  "+describe(c))
			}
		}
	}
	if len(out) == 0 {
		out = append(out, "(no acquire span with this key and token)")
	}
	return out
}

func describe(s sdktrace.ReadOnlySpan) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s [%s .. %s]", s.Name(), clock(s.StartTime()), clock(s.EndTime()))
	for _, kv := range s.Attributes() {
		if kv.Key == ctxlockotel.AttrKey || kv.Key == ctxlockotel.AttrBackend {
			continue
		}
		fmt.Fprintf(&b, " %s=%s", kv.Key, kv.Value.String())
	}
	for _, e := range s.Events() {
		fmt.Fprintf(&b, "; %s at %s", e.Name, clock(e.Time))
		for _, kv := range e.Attributes {
			fmt.Fprintf(&b, " %s=%q", kv.Key, kv.Value.String())
		}
	}
	return b.String()
}

// attr returns the value of span attribute key, "" when absent.
func attr(s sdktrace.ReadOnlySpan, key attribute.Key) string {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value.String()
		}
	}
	return ""
}

func clock(t time.Time) string { return t.Format("15:04:05.000000") }

// logCapture is a testing.TB that keeps what is logged.
type logCapture struct {
	testing.TB
	lines []string
}

func (l *logCapture) Logf(format string, args ...any) {
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

// The trail finds both holds of an overlap among its Managers' spans: the
// acquire spans by key and token, and the hold span of a hold that expired,
// with the instant its Manager ended it.
func TestTrailExplainsOverlap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var tr trail
		b := memory.New()
		m0 := ctxlock.NewManager(b, tr.option("m0"))
		m1 := ctxlock.NewManager(b, tr.option("m1"))
		defer m0.Close(context.Background())
		defer m1.Close(context.Background())
		ctx := context.Background()

		l0 := m0.NewLock("k", ctxlock.WithTTL(time.Minute), ctxlock.WithoutRefresh())
		exp, err := l0.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		start0 := time.Now()
		<-exp // expired, in fake time
		expiredAt := time.Now()
		l1 := m1.NewLock("k")
		if _, err := l1.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		start1 := time.Now()
		if err := l1.Unlock(); err != nil {
			t.Fatal(err)
		}
		// As if the first holder noticed its expiry a second late.
		holds := []locktest.Hold{
			{Key: "k", Owner: "m0/g0", Token: 1, Start: start0, End: start1.Add(time.Second)},
			{Key: "k", Owner: "m1/g0", Token: 2, Start: start1, End: start1},
		}
		got := &logCapture{TB: t}
		tr.explain(got, holds)
		out := strings.Join(got.lines, "\n")
		for _, want := range []string{
			`overlap on "k"`,
			"m0/g0 token 1", "m1/g0 token 2",
			ctxlockotel.SpanLock + " [",
			string(ctxlockotel.AttrFencingToken) + "=1",
			string(ctxlockotel.AttrFencingToken) + "=2",
			ctxlockotel.SpanHold + " [",
			ctxlockotel.EventHoldExpired + " at " + clock(expiredAt),
		} {
			if !strings.Contains(out, want) {
				t.Errorf("explanation lacks %q:\n%s", want, out)
			}
		}
	})
}
