package goredis

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// batchTestSrc adds ARGV[1] to KEYS[1] and answers {KEYS[1], new value},
// or an error reply when ARGV[2] is "err", or nil when it is "nil".
const batchTestSrc = `
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], v)
if ARGV[2] == 'err' then return redis.error_reply('ERR boom ' .. KEYS[1]) end
if ARGV[2] == 'nil' then return nil end
return {KEYS[1], v}
`

// testScript is a script of its own per test, so that whether the server
// has it cached is up to the test.
func testScript(t *testing.T) *redis.Script {
	return redis.NewScript(batchTestSrc + "-- " + t.Name())
}

func batchKeys(i int) []string {
	k := fmt.Sprintf("{bt:%d}", i)
	return []string{k, k + ":copy"}
}

const batchWait = 10 * time.Second

// gateHook counts pipelines and their commands, and, while gated, holds
// every pipeline until the gate opens.
type gateHook struct {
	mu        sync.Mutex
	pipelines int
	cmds      []string // names, in the order sent
	singles   int
	gate      chan struct{} // nil: not gated
	entered   chan struct{} // closed when a pipeline reaches the hook
	exited    atomic.Int64  // pipelines finished
	once      sync.Once
	onEnter   func(cmds []redis.Cmder) // if set, run as each pipeline enters
}

func newGateHook(gated bool) *gateHook {
	h := &gateHook{entered: make(chan struct{})}
	if gated {
		h.gate = make(chan struct{})
	}
	return h
}

func (h *gateHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *gateHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.mu.Lock()
		h.singles++
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}
func (h *gateHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.mu.Lock()
		h.pipelines++
		for _, c := range cmds {
			h.cmds = append(h.cmds, c.Name())
		}
		gate := h.gate
		h.mu.Unlock()
		h.once.Do(func() { close(h.entered) })
		if h.onEnter != nil {
			h.onEnter(cmds)
		}
		if gate != nil {
			<-gate
		}
		defer h.exited.Add(1)
		return next(ctx, cmds)
	}
}

func (h *gateHook) open() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gate != nil {
		close(h.gate)
		h.gate = nil
	}
}

func (h *gateHook) counts() (pipelines int, cmds []string, singles int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.pipelines, append([]string(nil), h.cmds...), h.singles
}

// waitPending waits until n calls are either held by h (its gate closed)
// or queued in bt. It polls the batcher's own state.
func waitPending(t *testing.T, bt *batcher, h *gateHook, n int) {
	t.Helper()
	deadline := time.Now().Add(batchWait)
	for {
		h.mu.Lock()
		got := len(h.cmds)
		h.mu.Unlock()
		bt.mu.Lock()
		got += len(bt.lone.queue)
		for _, l := range bt.lanes {
			got += len(l.queue)
		}
		bt.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d calls pending after %v, want %d", got, batchWait, n)
		}
		runtime.Gosched()
	}
}

func newTestBatcher(t *testing.T, c redis.UniversalClient) *batcher {
	bt := newBatcher(c)
	t.Cleanup(bt.close)
	return bt
}

type outcome struct {
	res any
	err error
}

// checkOutcome checks what call i (ARGV {i+1, mode}) got back.
func checkOutcome(t *testing.T, i int, mode string, o outcome) {
	t.Helper()
	key := batchKeys(i)[0]
	switch mode {
	case "err":
		if o.err == nil || !strings.Contains(o.err.Error(), "boom "+key) {
			t.Errorf("call %d: %v, %v; want its own error reply", i, o.res, o.err)
		}
	case "nil":
		if !errors.Is(o.err, redis.Nil) || o.res != nil {
			t.Errorf("call %d: %v, %v; want redis.Nil", i, o.res, o.err)
		}
	default:
		arr, ok := o.res.([]any)
		if o.err != nil || !ok || len(arr) != 2 || arr[0] != key {
			t.Errorf("call %d: %#v, %v; want [%s n]", i, o.res, o.err, key)
		}
	}
}

func modeOf(i int) string {
	switch i % 7 {
	case 3:
		return "err"
	case 5:
		return "nil"
	}
	return ""
}

// Many goroutines, each with its own key: every call gets its own answer
// (values, error replies and nil alike), and each key was changed exactly
// as often as it was called.
func TestBatcherConcurrentResults(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	bt := newTestBatcher(t, c)
	script := testScript(t)
	const goroutines, rounds = 50, 20
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for r := range rounds {
				mode := modeOf(g + r)
				res, err := bt.run(context.Background(), time.Second, script, batchKeys(g), g+1, mode)
				checkOutcome(t, g, mode, outcome{res, err})
				if mode == "" {
					if want := int64((r + 1) * (g + 1)); res.([]any)[1] != want {
						t.Errorf("goroutine %d round %d: value %v, want %d", g, r, res.([]any)[1], want)
					}
				}
			}
		})
	}
	wg.Wait()
	for g := range goroutines {
		if n, err := c.Get(context.Background(), batchKeys(g)[0]).Int(); err != nil || n != rounds*(g+1) {
			t.Errorf("key %d: %d, %v; want %d", g, n, err, rounds*(g+1))
		}
	}
}

// 64 calls released together share pipelines.
func TestBatcherCoalesces(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	bt := newTestBatcher(t, c)
	script := testScript(t)
	if _, err := bt.run(context.Background(), time.Second, script, batchKeys(0), 0, ""); err != nil {
		t.Fatal(err) // caches the script
	}
	h := newGateHook(false)
	c.AddHook(h)
	const n = 64
	start := make(chan struct{})
	out := make([]outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			res, err := bt.run(context.Background(), time.Second, script, batchKeys(i), i+1, modeOf(i))
			out[i] = outcome{res, err}
		})
	}
	close(start)
	wg.Wait()
	for i, o := range out {
		checkOutcome(t, i, modeOf(i), o)
	}
	pipelines, cmds, singles := h.counts()
	t.Logf("%d calls: %d pipelines", n, pipelines)
	if pipelines >= n || len(cmds) != n || singles != 0 {
		t.Fatalf("%d calls took %d pipelines (%d commands) and %d single commands; want fewer than %d pipelines, %d commands",
			n, pipelines, len(cmds), singles, n, n)
	}
}

// While a batch is in flight, the calls that arrive wait for it and leave
// together: one pipeline for the first call, one for the 63 others.
func TestBatcherOneBatchWhileInFlight(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	bt := newTestBatcher(t, c)
	script := testScript(t)
	if _, err := bt.run(context.Background(), time.Second, script, batchKeys(0), 0, ""); err != nil {
		t.Fatal(err)
	}
	h := newGateHook(true)
	c.AddHook(h)
	const n = 64
	out := make([]outcome, n)
	var wg sync.WaitGroup
	call := func(i int) {
		wg.Go(func() {
			res, err := bt.run(context.Background(), batchWait, script, batchKeys(i), i+1, modeOf(i))
			out[i] = outcome{res, err}
		})
	}
	call(0)
	<-h.entered // the first call is in flight, held by the hook
	for i := 1; i < n; i++ {
		call(i)
	}
	waitPending(t, bt, h, n)
	h.open()
	wg.Wait()
	for i, o := range out {
		checkOutcome(t, i, modeOf(i), o)
	}
	pipelines, cmds, _ := h.counts()
	if pipelines != 2 || len(cmds) != n {
		t.Fatalf("%d pipelines, %d commands; want 2 pipelines, %d commands", pipelines, len(cmds), n)
	}
}

// afterRoundTrip's function runs once, after the batch in flight has been
// answered, and not before; with no batch in flight, or once closed, the
// batcher declines.
func TestBatcherAfterRoundTrip(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	bt := newBatcher(c)
	script := testScript(t)
	if _, err := bt.run(context.Background(), time.Second, script, batchKeys(0), 0, ""); err != nil {
		t.Fatal(err)
	}
	bt.wg.Wait() // its flusher has stopped
	if bt.afterRoundTrip(func() { t.Error("called with nothing in flight") }) {
		t.Fatal("afterRoundTrip accepted with nothing in flight")
	}
	h := newGateHook(true)
	c.AddHook(h)
	done := make(chan error, 1)
	go func() {
		_, err := bt.run(context.Background(), batchWait, script, batchKeys(1), 1, "")
		done <- err
	}()
	<-h.entered // the call is in flight, held by the hook
	calls := make(chan int64, 2)
	f := func() { calls <- h.exited.Load() } // pipelines finished so far
	for range 2 {
		if !bt.afterRoundTrip(f) {
			t.Fatal("afterRoundTrip declined with a batch in flight")
		}
	}
	select {
	case <-calls:
		t.Fatal("called while the batch was in flight")
	default:
	}
	h.open()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case exited := <-calls:
			if exited != 1 {
				t.Fatalf("called with %d pipelines finished; want 1", exited)
			}
		case <-time.After(batchWait):
			t.Fatal("not called after the batch was answered")
		}
	}
	bt.close()
	select {
	case <-calls:
		t.Fatal("called more than once")
	default:
	}
	if bt.afterRoundTrip(func() { t.Error("called after close") }) {
		t.Fatal("afterRoundTrip accepted after close")
	}
}

// A function given while the flusher had nothing left to send runs as the
// flusher stops.
func TestBatcherAfterRoundTripAsFlusherStops(t *testing.T) {
	s := redistest.StartServer(t)
	bt := newTestBatcher(t, s.Client(t))
	ran := 0
	bt.mu.Lock()
	bt.lone.flushing = true // as if its last batch had just been answered
	bt.wg.Add(1)
	bt.mu.Unlock()
	if !bt.afterRoundTrip(func() { ran++ }) {
		t.Fatal("afterRoundTrip declined while the flusher runs")
	}
	bt.flush(&bt.lone)
	if ran != 1 {
		t.Fatalf("ran %d times as the flusher stopped; want 1", ran)
	}
	if bt.afterRoundTrip(func() { t.Error("called with no flusher") }) {
		t.Fatal("afterRoundTrip accepted after the flusher stopped")
	}
}

// A caller whose ctx ends returns at once, although its batch is stuck on a
// frozen server; the batch ends by itself (here when the server resumes) and
// close waits for it. A call given up before its batch left is not sent.
func TestBatcherCallerGivesUp(t *testing.T) {
	s := redistest.StartServer(t)
	// No per-call timeout below, and a long ReadTimeout: the batch waits
	// for the server as long as it is frozen.
	c := s.Client(t, func(o *redis.Options) { o.ReadTimeout = time.Minute; o.WriteTimeout = time.Minute })
	bt := newBatcher(c)
	defer bt.close()
	script := testScript(t)
	if _, err := bt.run(context.Background(), time.Second, script, batchKeys(0), 0, ""); err != nil {
		t.Fatal(err)
	}
	h := newGateHook(true)
	c.AddHook(h)
	s.Stop()
	defer s.Cont()

	ctx1, cancel1 := context.WithCancel(context.Background())
	done1 := make(chan error, 1)
	go func() {
		_, err := bt.run(ctx1, 0, script, batchKeys(1), 1, "")
		done1 <- err
	}()
	<-h.entered // call 1 is in flight (held by the gate)

	// Call 2 queues behind it and is given up before it is sent.
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() {
		_, err := bt.run(ctx2, 0, script, batchKeys(2), 1, "")
		done2 <- err
	}()
	waitPending(t, bt, h, 2)
	cancel2()
	if err := <-done2; !errors.Is(err, context.Canceled) {
		t.Fatalf("queued call after cancel: %v, want context.Canceled", err)
	}

	h.open() // call 1 now reaches the frozen server
	start := time.Now()
	cancel1()
	select {
	case err := <-done1:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("in-flight call after cancel: %v, want context.Canceled", err)
		}
	case <-time.After(batchWait):
		t.Fatalf("caller did not return within %v of its cancel", batchWait)
	}
	t.Logf("caller returned %v after its cancel", time.Since(start))
	if h.exited.Load() != 0 {
		t.Fatal("the batch ended while the server was frozen")
	}

	closed := closeAsync(bt)
	select {
	case <-closed:
		t.Fatal("close returned while a batch was in flight")
	default:
	}
	s.Cont()
	select {
	case <-closed:
	case <-time.After(batchWait):
		t.Fatalf("close did not return within %v once the server resumed", batchWait)
	}
	pipelines, cmds, _ := h.counts()
	if pipelines != 1 || len(cmds) != 1 {
		t.Fatalf("%d pipelines with %d commands; want the given-up call not sent", pipelines, len(cmds))
	}
	if n, err := c.Get(context.Background(), batchKeys(2)[0]).Result(); !errors.Is(err, redis.Nil) {
		t.Fatalf("the given-up call ran: %v, %v", n, err)
	}
	// After close, calls go out one by one.
	if _, err := bt.run(context.Background(), time.Second, script, batchKeys(3), 1, ""); err != nil {
		t.Fatalf("call after close: %v", err)
	}
}

// TestNewCallIsEvalSha: newCall's EVALSHA command has the arguments
// Script.EvalSha gives go-redis (so hooks see the same command), also
// without room in the call's own storage.
func TestNewCallIsEvalSha(t *testing.T) {
	s := testScript(t)
	client := redis.NewClient(&redis.Options{}) // no I/O: nothing is sent
	defer client.Close()
	pipe := client.Pipeline()
	for _, n := range []int{1, 5, 9} {
		keys := make([]string, n)
		for i := range keys {
			keys[i] = fmt.Sprintf("{k}%d", i)
		}
		args := []any{"owner", int64(1000), 3, ""}
		for range n {
			args = append(args, "more")
		}
		want := s.EvalSha(context.Background(), pipe, keys, args...).Args()
		c := newCall(s, s.Hash(), keys, args...)
		if fmt.Sprintf("%#v", c.evalsha) != fmt.Sprintf("%#v", want) {
			t.Errorf("%d keys: newCall's EVALSHA\n%#v\nwant\n%#v", n, c.evalsha, want)
		}
		if fmt.Sprint(c.keys) != fmt.Sprint(keys) || fmt.Sprint(c.args) != fmt.Sprint(args) {
			t.Errorf("%d keys: keys %v args %v, want %v %v", n, c.keys, c.args, keys, args)
		}
	}
}

// TestTimerPoolNoStaleTick: a recycled timer does not fire early, whether
// its last user received its tick or not (also with GODEBUG
// asynctimerchan=1).
func TestTimerPoolNoStaleTick(t *testing.T) {
	for _, received := range []bool{true, false} {
		tm := getTimer(time.Millisecond)
		time.Sleep(5 * time.Millisecond)
		if received {
			<-tm.C
		}
		putTimer(tm)
		tm = getTimer(time.Hour) // usually the same timer
		select {
		case <-tm.C:
			t.Fatalf("received=%v: a recycled timer ticked at once", received)
		case <-time.After(20 * time.Millisecond):
		}
		putTimer(tm)
	}
}

// The per-call timeout bounds the caller's wait, and the batch runs until
// the latest deadline among its calls: on a frozen server, a call with a
// short timeout gives up with DeadlineExceeded while its batch goes on for
// the longer timeout of another call, and the batch then ends by itself
// (close returns) although the server is still frozen.
func TestBatcherTimeouts(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t, func(o *redis.Options) { o.ReadTimeout = time.Minute; o.WriteTimeout = time.Minute })
	bt := newTestBatcher(t, c)
	script := testScript(t)
	if _, err := bt.run(context.Background(), time.Second, script, batchKeys(0), 0, ""); err != nil {
		t.Fatal(err)
	}
	h := newGateHook(true)
	var frozen atomic.Bool
	h.onEnter = func(cmds []redis.Cmder) {
		if len(cmds) == 2 { // the batch of the long and the short call
			s.Stop()
			frozen.Store(true)
		}
	}
	c.AddHook(h)
	defer s.Cont()

	first := make(chan error, 1)
	go func() { // held by the gate while the two others queue
		_, err := bt.run(context.Background(), batchWait, script, batchKeys(0), 1, "")
		first <- err
	}()
	<-h.entered
	const short, long = 200 * time.Millisecond, 2 * time.Second
	type result struct {
		err     error
		elapsed time.Duration
		batchOn bool // the batch was still running when the caller returned
	}
	results := make([]chan result, 2)
	for i, timeout := range []time.Duration{long, short} {
		results[i] = make(chan result, 1)
		go func() {
			start := time.Now()
			_, err := bt.run(context.Background(), timeout, script, batchKeys(i+1), 1, "")
			results[i] <- result{err, time.Since(start), h.exited.Load() < 2}
		}()
	}
	waitPending(t, bt, h, 3)
	h.open()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	r := <-results[1]
	if !errors.Is(r.err, context.DeadlineExceeded) || !frozen.Load() {
		t.Fatalf("short call on a frozen server: %v (frozen %v), want context.DeadlineExceeded", r.err, frozen.Load())
	}
	if !r.batchOn || r.elapsed >= long {
		t.Fatalf("short call returned after %v (batch still running: %v); want it back before the batch ends", r.elapsed, r.batchOn)
	}
	r = <-results[0]
	if r.err == nil || !isTransient(r.err) {
		t.Fatalf("long call on a frozen server: %v, want a timeout", r.err)
	}
	closed := closeAsync(bt)
	select {
	case <-closed:
	case <-time.After(batchWait):
		t.Fatalf("the batch did not end within %v on a frozen server", batchWait)
	}
	if h.exited.Load() != 2 {
		t.Fatalf("%d pipelines ended, want 2", h.exited.Load())
	}
}

// After SCRIPT FLUSH the batch's EVALSHAs of the flushed script fail with
// NOSCRIPT and are sent again with EVAL, in one more pipeline; the calls of
// a script still cached are not sent again.
func TestBatcherNoScript(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	bt := newTestBatcher(t, c)
	flushed := testScript(t)
	cached := redis.NewScript(batchTestSrc + "-- cached " + t.Name())
	ctx := context.Background()
	if _, err := bt.run(ctx, time.Second, flushed, batchKeys(0), 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := bt.run(ctx, time.Second, cached, batchKeys(0), 0, ""); err != nil {
		t.Fatal(err)
	}
	h := newGateHook(true)
	c.AddHook(h)
	const n = 16
	scriptOf := func(i int) *redis.Script {
		if i%2 == 0 {
			return cached
		}
		return flushed
	}
	out := make([]outcome, n+1)
	var wg sync.WaitGroup
	call := func(i int) {
		wg.Go(func() {
			res, err := bt.run(ctx, batchWait, scriptOf(i), batchKeys(i), i+1, modeOf(i))
			out[i] = outcome{res, err}
		})
	}
	call(0) // held by the gate while the others queue
	<-h.entered
	for i := 1; i <= n; i++ {
		call(i)
	}
	waitPending(t, bt, h, n+1)
	h.open()
	wg.Wait()
	for i, o := range out {
		checkOutcome(t, i, modeOf(i), o)
	}
	pipelines, cmds, singles := h.counts()
	var evalsha, eval int
	for _, name := range cmds {
		switch name {
		case "evalsha":
			evalsha++
		case "eval":
			eval++
		}
	}
	// call 0; the 16 others (EVALSHA); the 8 of the flushed script (EVAL).
	if pipelines != 3 || evalsha != n+1 || eval != n/2 || singles != 0 {
		t.Fatalf("%d pipelines, %d EVALSHA, %d EVAL, %d single commands; want 3, %d, %d, 0", pipelines, evalsha, eval, singles, n+1, n/2)
	}
	if got, err := bt.run(ctx, time.Second, flushed, batchKeys(1), 1, ""); err != nil || got.([]any)[1] != int64(3) {
		t.Fatalf("after the fallback: %v, %v", got, err)
	}
}

// In Cluster mode one batch is split by node; a MOVED reply (a client that
// talks to one node only) or a dead node fails only the calls it concerns.
func TestBatcherClusterPerCommandErrors(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	ctx := context.Background()
	script := testScript(t)
	const n = 60

	// A plain client on node 0: the keys of other nodes get MOVED.
	node0 := cl.Node(0).Client(t)
	owned := make([]bool, n)
	cc := cl.Client(t)
	for i := range n {
		m, err := cc.MasterForKey(ctx, batchKeys(i)[0])
		if err != nil {
			t.Fatal(err)
		}
		owned[i] = m.Options().Addr == cl.Node(0).Addr()
	}
	runAll := func(bt *batcher, h *gateHook) []outcome {
		out := make([]outcome, n)
		var wg sync.WaitGroup
		call := func(i int) {
			wg.Go(func() {
				res, err := bt.run(ctx, batchWait, script, batchKeys(i), i+1, "")
				out[i] = outcome{res, err}
			})
		}
		call(0)
		<-h.entered
		for i := 1; i < n; i++ {
			call(i)
		}
		waitPending(t, bt, h, n)
		h.open()
		wg.Wait()
		return out
	}

	bt0 := newTestBatcher(t, node0)
	h0 := newGateHook(true)
	node0.AddHook(h0)
	var moved, ok int
	for i, o := range runAll(bt0, h0) {
		if owned[i] {
			checkOutcome(t, i, "", o)
			ok++
			continue
		}
		if _, isMoved := redis.IsMovedError(o.err); !isMoved {
			t.Errorf("call %d on another node's key: %v, %v; want MOVED", i, o.res, o.err)
		}
		moved++
	}
	if ok == 0 || moved == 0 {
		t.Fatalf("%d ok, %d MOVED: want both", ok, moved)
	}

	// The cluster client routes every call to its node.
	bt := newTestBatcher(t, cc)
	h := newGateHook(true)
	cc.AddHook(h) // cluster-level hook: one pipeline per Exec
	for i, o := range runAll(bt, h) {
		checkOutcome(t, i, "", o)
	}
	pipelines, cmds, _ := h.counts()
	t.Logf("cluster: %d calls in %d pipelines (%d commands, EVAL fallbacks included)", n, pipelines, len(cmds))

	// With node 1 dead, only its calls fail.
	dead := make([]bool, n)
	for i := range n {
		m, err := cc.MasterForKey(ctx, batchKeys(i)[0])
		if err != nil {
			t.Fatal(err)
		}
		dead[i] = m.Options().Addr == cl.Node(1).Addr()
	}
	cl.Node(1).Kill()
	h2 := newGateHook(true)
	cc.AddHook(h2)
	var failed, alive int
	for i, o := range runAll(bt, h2) {
		if dead[i] {
			if o.err == nil {
				t.Errorf("call %d on the dead node: %v", i, o.res)
			}
			failed++
			continue
		}
		checkOutcome(t, i, "", o)
		alive++
	}
	if failed == 0 || alive == 0 {
		t.Fatalf("%d failed, %d alive: want both", failed, alive)
	}
}

// In Cluster mode a master that does not answer holds up only the calls
// for its own keys: calls for the other masters do not queue behind its
// batch.
func TestBatcherClusterFrozenMaster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	ctx := context.Background()
	cc := cl.Client(t)
	bt := newTestBatcher(t, cc)
	script := testScript(t)
	byNode := map[string][]int{}
	for i := range 60 {
		m, err := cc.MasterForKey(ctx, batchKeys(i)[0])
		if err != nil {
			t.Fatal(err)
		}
		byNode[m.Options().Addr] = append(byNode[m.Options().Addr], i)
		if _, err := bt.run(ctx, time.Second, script, batchKeys(i), 1, ""); err != nil {
			t.Fatal(err) // every node caches the script
		}
	}
	frozen := cl.Node(1)
	h := newGateHook(false)
	cc.AddHook(h)
	frozen.Stop()
	defer frozen.Cont()

	stuckCtx, cancel := context.WithCancel(ctx)
	stuck := make(chan error, 1)
	go func() {
		_, err := bt.run(stuckCtx, batchWait, script, batchKeys(byNode[frozen.Addr()][0]), 1, "")
		stuck <- err
	}()
	<-h.entered // its batch is on its way to the frozen master
	var wg sync.WaitGroup
	for _, node := range []int{0, 2} {
		for _, i := range byNode[cl.Node(node).Addr()] {
			wg.Go(func() {
				res, err := bt.run(ctx, time.Second, script, batchKeys(i), 1, "")
				checkOutcome(t, i, "", outcome{res, err})
			})
		}
	}
	wg.Wait()
	select {
	case err := <-stuck:
		t.Fatalf("the call on the frozen master returned: %v", err)
	default:
	}
	cancel()
	if err := <-stuck; !errors.Is(err, context.Canceled) {
		t.Fatalf("the call on the frozen master after cancel: %v", err)
	}
	frozen.Cont()
}

// run is do for a call of s with keys and args.
func (bt *batcher) run(ctx context.Context, timeout time.Duration, s *redis.Script, keys []string, args ...any) (any, error) {
	return bt.do(ctx, timeout, newCall(s, s.Hash(), keys, args...))
}

// closeAsync closes bt in another goroutine; the channel closes when
// bt.close has returned.
func closeAsync(bt *batcher) <-chan struct{} {
	closed := make(chan struct{})
	go func() {
		bt.close()
		close(closed)
	}()
	return closed
}

// A flusher's wait for callers ends as soon as as many calls are queued as
// it has just answered, and keeps waiting turned on.
func TestGatherEndsWhenCallersAreBack(t *testing.T) {
	var l lane
	l.backoff = 4 // from earlier waits in vain
	l.queued.Store(3)
	l.gather(3, true)
	if l.backoff != 0 || l.skipWaits != 0 {
		t.Fatalf("callers already back: backoff %d, skip %d; want 0, 0", l.backoff, l.skipWaits)
	}

	// Callers come back, from another goroutine, while it waits: with a
	// wait long enough never to run out, it must poll until they are all
	// back.
	l.maxWait = time.Minute
	l.queued.Store(0)
	back := make(chan struct{})
	go func() {
		defer close(back)
		for range 3 {
			runtime.Gosched()
			l.queued.Add(1)
		}
	}()
	l.gather(3, true)
	if n := l.queued.Load(); n != 3 || l.backoff != 0 || l.skipWaits != 0 {
		t.Fatalf("gather returned with %d of 3 calls queued, backoff %d, skip %d; want 3, 0, 0", n, l.backoff, l.skipWaits)
	}
	<-back
}

// Without polling (one P) gather only yields: no wait, no backoff.
func TestGatherWithoutPolling(t *testing.T) {
	l := lane{maxWait: time.Minute}
	l.gather(2, false) // nobody queues; would wait a minute if it polled
	if l.backoff != 0 || l.skipWaits != 0 {
		t.Fatalf("gather without polling: backoff %d, skip %d; want 0, 0", l.backoff, l.skipWaits)
	}
}

// A wait in vain lasts gatherWait and turns waiting off for 1, 2, 4, ...
// up to maxSkipWaits batches.
func TestGatherBacksOffAfterWaitsInVain(t *testing.T) {
	var l lane
	want := 1
	for range 10 {
		start := time.Now()
		l.gather(2, true) // nobody queues
		if waited := time.Since(start); waited < gatherWait {
			t.Fatalf("a wait in vain took %v, want at least %v", waited, gatherWait)
		}
		if l.skipWaits != want {
			t.Fatalf("after a wait in vain: skip %d batches, want %d", l.skipWaits, want)
		}
		for range want {
			l.gather(2, true) // skipped: returns at once, without looking
		}
		if l.skipWaits != 0 {
			t.Fatalf("after %d skipped waits: skip %d, want 0", want, l.skipWaits)
		}
		want = min(2*want, maxSkipWaits)
	}
}

// settle waits for the calls on its keys that were queued or in flight,
// answered or abandoned, and for no others.
func TestBatcherSettle(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	bt := newTestBatcher(t, c)
	script := testScript(t)
	if _, err := bt.run(context.Background(), time.Second, script, batchKeys(9), 0, ""); err != nil {
		t.Fatal(err) // the script is cached: one pipeline per batch below
	}
	h := newGateHook(true)
	c.AddHook(h)
	settled := func(keys ...string) <-chan struct{} {
		done := make(chan struct{})
		go func() {
			bt.settle(context.Background(), len(keys), func(i int) string { return keys[i] })
			close(done)
		}()
		return done
	}
	key := func(i int) string { return batchKeys(i)[0] }

	// Call 1 (key 1) in flight, held by the gate; call 2 (key 2) queued
	// behind it and given up; call 3 (key 1) queued.
	start := func(ctx context.Context, key int) (*call, <-chan error) {
		cl := newCall(script, script.Hash(), batchKeys(key), 1, "")
		done := make(chan error, 1)
		go func() {
			_, err := bt.do(ctx, 0, cl)
			done <- err
		}()
		return cl, done
	}
	c1, done1 := start(context.Background(), 1)
	<-h.entered
	ctx2, cancel2 := context.WithCancel(context.Background())
	_, done2 := start(ctx2, 2)
	waitPending(t, bt, h, 2)
	c3, done3 := start(context.Background(), 1)
	waitPending(t, bt, h, 3)
	cancel2()
	if err := <-done2; !errors.Is(err, context.Canceled) {
		t.Fatalf("call 2 after cancel: %v", err)
	}

	// Nothing to wait for: another key, and the abandoned call's.
	<-settled(key(5))
	<-settled(key(2), key(6))

	s1 := settled(key(7), key(1))
	select {
	case <-s1:
		t.Fatal("settle of key 1 returned while its call was held before the server")
	default:
	}
	h.open()
	<-s1
	for i, cl := range []*call{c1, c3} {
		select {
		case <-cl.done:
		default:
			t.Fatalf("settle of key 1 returned before call %d on it was answered", 2*i+1)
		}
	}
	for i, d := range []<-chan error{done1, done3} {
		if err := <-d; err != nil {
			t.Fatalf("call %d: %v", 2*i+1, err)
		}
	}

	// A settle whose ctx ends stops waiting.
	h2 := newGateHook(true)
	c.AddHook(h2)
	defer h2.open()
	_, done4 := start(context.Background(), 4)
	<-h2.entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	bt.settle(ctx, 1, func(int) string { return key(4) })
	h2.open()
	if err := <-done4; err != nil {
		t.Fatalf("call 4: %v", err)
	}
}

// An Acquire whose caller gave up after it was sent may still take the key
// on the server. The caller's Release (what the Manager does after an
// attempt with an unknown outcome) must not overtake it, or the lease
// would stay for its TTL with nobody to release it.
func TestReleaseDoesNotOvertakeAbandonedAcquire(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	b := New(c)
	t.Cleanup(func() { _ = b.Close() })
	key, ctx := "settle/"+t.Name(), context.Background()
	h, req := abandonAcquireInFlight(t, b, c, key)
	waiting := make(chan struct{})
	b.batch.settleWaits = func() { close(waiting) }
	released := make(chan []error, 1)
	go func() { released <- b.Release(ctx, []ctxlock.Lease{{Key: key, Owner: req.Owner}}) }()
	var errs []error
	select {
	case errs = <-released: // without waiting for the acquire held
	case <-waiting:
	}
	h.Let()
	if errs == nil {
		errs = <-released
	}
	if errs[0] != nil {
		t.Fatalf("Release: %v", errs[0])
	}
	if v, err := c.Get(ctx, b.lockKey(key)).Result(); !errors.Is(err, redis.Nil) {
		t.Fatalf("after Release the key holds %q (%v): the abandoned acquire ran after the release", v, err)
	}
}

// A Release waits only for the calls on its own keys: what it costs must
// not grow with the calls on other keys queued or in flight (settle used
// to copy every one of them into a map, with the batcher's mutex held,
// which every caller and the flusher take).
func TestReleaseCostIgnoresCallsOnOtherKeys(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	b := New(c)
	t.Cleanup(func() { _ = b.Close() })
	ctx := context.Background()
	key := "settle/" + t.Name()
	if _, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: key + "/warm", Owner: "w", TTL: time.Minute, Timeout: time.Second}); err != nil {
		t.Fatal(err) // the script is cached
	}
	free := []ctxlock.Lease{{Key: key + "/free", Owner: "nobody"}}
	release := func() {
		if errs := b.Release(ctx, free); errs[0] != nil {
			t.Fatal(errs[0])
		}
	}
	idle := testing.AllocsPerRun(20, release)

	h := redistest.NewHoldNextPipeline(t)
	c.AddHook(h)
	const others = 512
	var wg sync.WaitGroup
	acquire := func(i int) {
		defer wg.Done()
		req := ctxlock.AcquireRequest{Key: fmt.Sprintf("%s/%d", key, i), Owner: "o", TTL: time.Minute, Timeout: time.Minute}
		if _, err := b.Acquire(ctx, req); err != nil {
			t.Error(err)
		}
	}
	wg.Add(others)
	go acquire(0)
	<-h.Reached()
	for i := 1; i < others; i++ {
		go acquire(i)
	}
	for {
		b.batch.mu.Lock()
		n := len(b.batch.lone.inflight) + len(b.batch.lone.queue)
		b.batch.mu.Unlock()
		if n == others {
			break
		}
		runtime.Gosched()
	}
	busy := testing.AllocsPerRun(20, release)
	h.Let()
	wg.Wait()
	if busy > idle+2 {
		t.Fatalf("Release of a key nobody calls: %v allocations with %d calls on other keys pending, %v with none", busy, others, idle)
	}
}

// abandonAcquireInFlight makes an Acquire of key on b (whose client is c)
// that its caller gives up once it has been sent, while the returned hook
// holds its pipeline before the server (Let sends it on). It returns the
// hook and the request.
func abandonAcquireInFlight(t *testing.T, b *Backend, c *redis.Client, key string) (*redistest.HoldNextPipeline, ctxlock.AcquireRequest) {
	t.Helper()
	ctx := context.Background()
	warm := ctxlock.AcquireRequest{Key: key + "/warm", Owner: "w", TTL: time.Minute, Timeout: time.Second}
	if _, err := b.Acquire(ctx, warm); err != nil {
		t.Fatal(err) // the script is cached
	}
	h := redistest.NewHoldNextPipeline(t)
	c.AddHook(h)
	actx, cancel := context.WithCancel(ctx)
	go func() {
		<-h.Reached() // sent: held before the server
		cancel()
	}()
	req := ctxlock.AcquireRequest{Key: key, Owner: "abandoned", TTL: time.Minute, Timeout: time.Minute}
	if _, err := b.Acquire(actx, req); !errors.Is(err, context.Canceled) {
		h.Let()
		t.Fatalf("Acquire given up while in flight: %v", err)
	}
	return h, req
}
