// Command bench runs ctxlock beside go-redsync/redsync v4, bsm/redislock and
// rueidis/rueidislock on the same Redis in the same run, interleaved, and
// prints markdown tables of the medians over several runs.
//
//	cd bench && go run . -scenario all -runs 3
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/bsm/redislock"
	"github.com/go-redsync/redsync/v4"
)

var (
	memprofile  = flag.String("memprofile", "", "in (c), write a heap profile while holding the locks to FILE.IMPL.N")
	memprofImpl = flag.String("memprofile-impl", "ctxlock", "implementation whose heap -memprofile records")
)

func writeHeapProfile(path string) {
	f, err := os.Create(path)
	if err != nil {
		progress("memprofile: %v", err)
		return
	}
	defer f.Close()
	_ = pprof.Lookup("heap").WriteTo(f, 0)
}

var verbose = flag.Bool("v", false, "print per-command server call breakdowns to stderr")

var clockTokens = flag.Bool("clocktokens", false, "run ctxlock with goredis.WithClockTokens(time.Hour) (tokens from the server clock, counters with a TTL)")

func allImpls() []Impl {
	return []Impl{
		ctxlockImpl(),
		redsyncImpl("redsync", true),
		redislockImpl("redislock", true, nil),
		rueidislockImpl("rueidislock", true, 0),
		redsyncImpl("redsync 10ms", false, redsyncTuned()...),
		redislockImpl("redislock 10ms", false, func() redislock.RetryStrategy { return redislock.LinearBackoff(10 * time.Millisecond) }),
		rueidislockImpl("rueidislock poll 10ms", false, 10*time.Millisecond),
	}
}

func redsyncTuned() []redsync.Option {
	return []redsync.Option{redsync.WithRetryDelay(10 * time.Millisecond), redsync.WithTries(math.MaxInt32)}
}

func baseImpls(impls []Impl) []Impl {
	var out []Impl
	for _, im := range impls {
		if im.Base {
			out = append(out, im)
		}
	}
	return out
}

// rotate returns impls starting at run%len, so that no implementation always
// runs first (noise from concurrent load hits all alike).
func rotate[T any](xs []T, run int) []T {
	k := run % len(xs)
	return append(append([]T(nil), xs[k:]...), xs[:k]...)
}

func main() {
	var (
		scenarioF    = flag.String("scenario", "all", "comma-separated: a (uncontended), b (contended), c (scale), d (redlock), ref (redis-benchmark), or all")
		runs         = flag.Int("runs", 3, "runs of (a) and (b); medians are reported")
		g            = flag.Int("g", 8, "goroutines (a) and contenders (b)")
		durA         = flag.Duration("dur-a", 1500*time.Millisecond, "measurement window of (a)")
		durB         = flag.Duration("dur-b", 1500*time.Millisecond, "measurement window of (b), per hold")
		holdsF       = flag.String("holds", "0,1ms", "hold times of (b)")
		scaleF       = flag.String("scale", "10000", "lock counts of (c), e.g. 10000,100000")
		scaleTTL     = flag.Duration("scale-ttl", 3*time.Second, "lease TTL of (c); locks are held for 3 TTLs")
		only         = flag.String("impl", "", "comma-separated implementation names to run (default all)")
		redisAddr    = flag.String("redis", "", "use this Redis (host:port) instead of starting one; never 6379 in tests")
		redlockNodes = flag.Int("redlock-nodes", 5, "independent servers of (d)")
		out          = flag.String("o", "", "also write the markdown to this file")
		cpuprof      = flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	)
	flag.Parse()
	if *memprofile != "" {
		runtime.MemProfileRate = 1
	}
	if *cpuprof != "" {
		f, err := os.Create(*cpuprof)
		if err != nil {
			fatalf("%v", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fatalf("%v", err)
		}
		defer pprof.StopCPUProfile()
	}
	want := map[string]bool{}
	for _, s := range strings.Split(*scenarioF, ",") {
		want[strings.TrimSpace(s)] = true
	}
	if want["all"] {
		for _, s := range []string{"a", "b", "c", "d", "ref"} {
			want[s] = true
		}
	}
	var holds []time.Duration
	for _, s := range strings.Split(*holdsF, ",") {
		if s == "0" {
			holds = append(holds, 0)
			continue
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			fatalf("bad -holds: %v", err)
		}
		holds = append(holds, d)
	}
	var sizes []int
	for _, s := range strings.Split(*scaleF, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			fatalf("bad -scale: %q", s)
		}
		sizes = append(sizes, n)
	}
	impls := allImpls()
	if *only != "" {
		keep := map[string]bool{}
		for _, s := range strings.Split(*only, ",") {
			keep[strings.TrimSpace(s)] = true
		}
		var f []Impl
		for _, im := range impls {
			if keep[im.Name] {
				f = append(f, im)
			}
		}
		impls = f
	}

	addr := *redisAddr
	if addr == "" {
		srv, err := startRedis()
		if err != nil {
			fatalf("%v", err)
		}
		defer srv.Stop()
		addr = srv.Addr
	}
	e := newEnv([]string{addr})
	defer e.close()

	var md bytes.Buffer
	w := io.MultiWriter(os.Stdout, &md)
	fmt.Fprintf(w, "## Run %s\n\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "- machine: %d cores (GOMAXPROCS %d), %s; %s %s/%s\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), cpuModel(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(w, "- redis: %s at %s\n", redisVersion(e), addr)
	fmt.Fprintf(w, "- load average at start: %s (other work on the machine: numbers are noisy)\n", loadAvg())
	fmt.Fprintf(w, "- library: %s\n", libraryRev())
	fmt.Fprintf(w, "- command: `go run . %s`\n\n", strings.Join(os.Args[1:], " "))

	if want["ref"] {
		fmt.Fprintf(w, "### Reference: redis-benchmark -q -n 100000 -t set -P 1\n\n```\n%s\n```\n\n", redisBenchmark(addr))
	}
	if want["a"] {
		sectionA(w, e, baseImpls(impls), *runs, *g, *durA, "(a) Uncontended")
	}
	if want["b"] {
		sectionB(w, e, impls, *runs, *g, holds, *durB, "(b) Contended")
	}
	if want["c"] {
		sectionC(w, e, baseImpls(impls), sizes, *scaleTTL)
	}
	if want["d"] {
		sectionD(w, *redlockNodes, *runs, *g, holds, *durA, *durB)
	}
	fmt.Fprintf(w, "load average at end: %s\n", loadAvg())
	if *out != "" {
		if err := os.WriteFile(*out, md.Bytes(), 0o644); err != nil {
			fatalf("%v", err)
		}
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}

func progress(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "cpu unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "cpu unknown"
}

// libraryRev is the commit of the library under test (bench uses ../ through
// a replace directive), and whether its working tree had local changes.
func libraryRev() string {
	rev, err := exec.Command("git", "-C", "..", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown (not a git checkout)"
	}
	s := "commit " + strings.TrimSpace(string(rev))
	if st, err := exec.Command("git", "-C", "..", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
		s += " + uncommitted changes in the working tree"
	}
	return s
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func redisVersion(e *env) string {
	s, err := e.info[0].Info(contextBG(), "server").Result()
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			return v
		}
	}
	return "unknown"
}

func redisBenchmark(addr string) string {
	host, port, _ := strings.Cut(addr, ":")
	cmd := exec.Command("redis-benchmark", "-h", host, "-p", port, "-q", "-n", "100000", "-t", "set", "-P", "1")
	b, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Sprintf("redis-benchmark failed: %v %s", err, b)
	}
	// -q prints progress with carriage returns: keep the final lines.
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if i := strings.LastIndexByte(l, '\r'); i >= 0 {
			l = l[i+1:]
		}
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// cell collects one metric over runs.
type cells map[string][]float64

func (c cells) add(k string, v float64) { c[k] = append(c[k], v) }
func (c cells) med(k string) float64    { return median(c[k]) }

// sum reports the total over runs (for rare events such as stalls).
func sum(xs []float64) string {
	t := 0.0
	for _, x := range xs {
		t += x
	}
	return strconv.FormatFloat(t, 'f', 0, 64)
}

func f0(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}
func f1(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}
func f2(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func sectionA(w io.Writer, e *env, impls []Impl, runs, g int, d time.Duration, title string) {
	res := make(map[string]cells)
	for run := range runs {
		for _, im := range rotate(impls, run) {
			progress("%s run %d/%d %s", title, run+1, runs, im.Name)
			r, err := runUncontended(e, im, g, d)
			if err != nil {
				progress("%s: %s: %v", title, im.Name, err)
				continue
			}
			c := res[im.Name]
			if c == nil {
				c = cells{}
				res[im.Name] = c
			}
			c.add("ops", r.OpsPerSec)
			c.add("p50", ms(r.P50))
			c.add("p99", ms(r.P99))
			c.add("cmds", r.CmdsPerOp)
			c.add("rts", r.RTsPerOp)
			c.add("srv", r.SrvCmdsPerOp)
			c.add("ccpu", r.ClientCPU)
			c.add("scpu", r.ServerCPU)
			c.add("err", float64(r.Errors))
			c.add("stall", float64(r.Stalls))
		}
	}
	fmt.Fprintf(w, "### %s: %d goroutines, one client, distinct keys, Lock+Unlock loop (median of %d runs × %v)\n\n", title, g, runs, d)
	fmt.Fprintln(w, "| implementation | ops/s | p50 ms | p99 ms | client cmds/op | round trips/op | server cmds/op (incl. Lua) | client CPU µs/op | server CPU µs/op | errors | stalls > 1 s |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	best := bestPeer(res, "ops")
	for _, im := range impls {
		c := res[im.Name]
		if c == nil {
			fmt.Fprintf(w, "| %s | failed | | | | | | | | | |\n", im.Name)
			continue
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", im.Name, f0(c.med("ops")), f2(c.med("p50")), f2(c.med("p99")), f1(c.med("cmds")), f2(c.med("rts")), f1(c.med("srv")), f1(c.med("ccpu")), f1(c.med("scpu")), f0(c.med("err")), sum(c["stall"]))
	}
	if c := res[impls[0].Name]; c != nil && best > 0 {
		fmt.Fprintf(w, "\n"+impls[0].Name+" / best peer ops/s: **%.2f×** (target ≥ 1.5×)\n", c.med("ops")/best)
	}
	fmt.Fprintln(w)
}

// bestPeer is the highest median of metric k over implementations other than ctxlock.
func bestPeer(res map[string]cells, k string) float64 {
	best := 0.0
	for name, c := range res {
		if name != "ctxlock" && !strings.HasPrefix(name, "ctxlock ") {
			if v := c.med(k); v > best {
				best = v
			}
		}
	}
	return best
}

func sectionB(w io.Writer, e *env, impls []Impl, runs, g int, holds []time.Duration, d time.Duration, title string) {
	for _, hold := range holds {
		res := make(map[string]cells)
		for run := range runs {
			for _, im := range rotate(impls, run) {
				progress("%s hold %v run %d/%d %s", title, hold, run+1, runs, im.Name)
				r, err := runContended(e, im, g, hold, d)
				if err != nil {
					progress("%s: %s: %v", title, im.Name, err)
					continue
				}
				addContended(res, im.Name, r)
			}
		}
		fmt.Fprintf(w, "### %s: %d contenders, each its own client, one key, hold %v (median of %d runs × %v)\n\n", title, g, hold, runs, d)
		printContended(w, impls, res)
	}
}

func addContended(res map[string]cells, name string, r contended) {
	c := res[name]
	if c == nil {
		c = cells{}
		res[name] = c
	}
	c.add("acq", r.AcqPerSec)
	c.add("hand", r.HandoffPerSec)
	c.add("p50", ms(r.WaitP50))
	c.add("p99", ms(r.WaitP99))
	c.add("max", ms(r.WaitMax))
	c.add("minmax", r.MinMax)
	c.add("hold", ms(r.HoldP50))
	c.add("gap", ms(r.GapP50))
	c.add("cmds", r.CmdsPerAcq)
	c.add("srv", r.SrvCmdsPerAcq)
	c.add("overlap", float64(r.Overlaps))
	c.add("err", float64(r.Errors))
}

func printContended(w io.Writer, impls []Impl, res map[string]cells) {
	fmt.Fprintln(w, "| implementation | acq/s | handoffs/s | wait p50 ms | wait p99 ms | wait max ms | min/max per contender | hold p50 ms | gap p50 ms | client cmds/acq | server cmds/acq (incl. Lua) | overlaps | errors |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, im := range impls {
		c := res[im.Name]
		if c == nil {
			fmt.Fprintf(w, "| %s | failed | | | | | | | | | | | |\n", im.Name)
			continue
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", im.Name,
			f0(c.med("acq")), f0(c.med("hand")), f1(c.med("p50")), f1(c.med("p99")), f1(c.med("max")),
			f2(c.med("minmax")), f2(c.med("hold")), f2(c.med("gap")), f1(c.med("cmds")), f1(c.med("srv")),
			f0(c.med("overlap")), f0(c.med("err")))
	}
	if c := res[impls[0].Name]; c != nil {
		if best := bestPeer(res, "hand"); best > 0 {
			fmt.Fprintf(w, "\n"+impls[0].Name+" / best peer handoffs/s: **%.2f×** (target ≥ 1.5×, with ≤ 3 cmds/acq and min/max ≥ 0.5)\n", c.med("hand")/best)
			if hold := c.med("hold"); hold >= 0.5 {
				// With a hold this long, the hold itself bounds the rate.
				fmt.Fprintf(w, "\nceiling: with no gap at all, "+impls[0].Name+"'s holds (p50 %.2f ms) allow %.0f handoffs/s, **%.2f×** the best peer\n",
					hold, 1000/hold, 1000/hold/best)
			}
		}
	}
	fmt.Fprintln(w)
}

func sectionC(w io.Writer, e *env, impls []Impl, sizes []int, ttl time.Duration) {
	fmt.Fprintf(w, "### (c) Scale: one client holds N locks with auto-refresh (TTL %v) for 3 TTLs (one run)\n\n", ttl)
	fmt.Fprintln(w, "Peers refresh with their documented extend call from one goroutine per lock every TTL/3 (rueidislock: its built-in loop, every TTL/2).")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| implementation | N | acquire s | goroutines | heap B/lock | heap+stacks B/lock | refresh cmds/s | leases per round trip | lost |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, n := range sizes {
		for _, im := range impls {
			progress("(c) N=%d %s", n, im.Name)
			r, err := runScale(e, im, n, ttl, 3*ttl, 64)
			if err != nil {
				fmt.Fprintf(w, "| %s | %d | failed: %v | | | | | | |\n", im.Name, n, oneLine(err))
				continue
			}
			lpr := f1(r.LeasesPerRT)
			if r.LeasesPerRT < 0 {
				lpr = "n/a (auto-pipelined)"
			}
			fmt.Fprintf(w, "| %s | %d | %.1f | %d | %.0f | %.0f | %.0f | %s | %d |\n", im.Name, n, r.AcquireSecs, r.Goroutines, r.HeapPerLock, r.HeapStackPerLk, r.RefreshCmdsSec, lpr, r.Lost)
			// Let the server drop the released keys and the runtime settle.
			time.Sleep(200 * time.Millisecond)
		}
	}
	fmt.Fprintln(w)
}

func oneLine(err error) string {
	s := strings.ReplaceAll(err.Error(), "\n", " ")
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}
