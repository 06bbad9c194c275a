package goredis

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// batcher group-commits single-key script calls (Acquire, Relock) from many
// goroutines into shared pipelines: N concurrent calls cost one write and
// one read per batch instead of N round trips on N pooled connections.
//
// There is no long-lived goroutine. A caller that finds no batch in flight
// starts a flusher, which sends the queue as one pipeline, again and again
// until the queue is empty, and exits. A lone caller's call leaves at once:
// nothing waits for a timer. Calls made while a batch is in flight queue up
// and leave together in the next one. After a batch of several calls the
// flusher gathers: it yields, then waits a few microseconds at most for the
// callers it has just answered, which usually come straight back with their
// next call, to queue again (see lane.gather). Without the yield batches
// were half as big, and under CPU pressure the 8-goroutine benchmark was
// about 1.5 times slower. After a batch of one it does not: a lone caller
// looping on Lock+Unlock paid about 30µs per call for that yield.
//
// One batch is in flight at a time (two measured worse: smaller batches).
// In Cluster mode that holds per master: a master that does not answer
// must not hold up the calls for the others, so calls are queued by the
// master of their key (the ClusterClient pipeline still routes each command
// by its slot, and follows MOVED and ASK).
//
// Every caller waits for its own answer or for its own ctx, bounded by its
// timeout, whichever comes first; the batch it was part of runs on. A call
// given up before its batch left is not sent. One given up later may still
// run on the server after its caller returned: settle lets the operations
// that must follow it there (a release of the lease it may take, a waiter
// leaving the queue it may join) wait for it. A batch runs on a context
// bounded by the latest deadline among its calls, or by none when one of
// them has no timeout (go-redis's ReadTimeout and WriteTimeout then bound
// it), so it ends by itself.
type batcher struct {
	client  redis.UniversalClient
	cluster *redis.ClusterClient // non-nil: one lane per master
	acks    replicaAcks          // WithReplicaAcks: every pipeline ends with WAIT

	mu     sync.Mutex
	lone   lane             // every call, outside Cluster mode
	lanes  map[string]*lane // Cluster mode: by master address
	closed bool             // new calls bypass the batcher
	kept   uint64           // lanes kept idle so far (see keep)
	wg     sync.WaitGroup   // flushers

	settleWaits func() // tests: called once settle has a call to wait for
}

// lane is a queue of calls and whether a flusher is draining it.
type lane struct {
	addr     string
	queue    []*call
	inflight []*call // the batch being sent (read-only while it is)
	flushing bool
	queued   atomic.Int32 // len(queue), for a flusher waiting for callers
	after    []func()     // afterRoundTrip's functions, run by the flusher
	kept     uint64       // batcher.kept when last kept idle (bt.mu)

	// Owned by the lane's flusher: how many batches to send without
	// waiting for callers, after a wait they did not come back for.
	skipWaits, backoff int
	maxWait            time.Duration // of a gather; 0: gatherWait (tests set it)
}

// States of a call.
const (
	callQueued    int32 = iota
	callSent            // taken into a batch by a flusher
	callAbandoned       // its caller gave up before it was sent: skip it
)

type call struct {
	ctx      context.Context // the caller's, for the values hooks may read
	deadline time.Time       // zero: no timeout
	s        *redis.Script
	keys     []string
	args     []any
	evalsha  []any // EVALSHA's arguments, ending with args
	state    atomic.Int32
	cmd      *redis.Cmd // the flusher's, once sent (no slice of them per batch)

	res     any
	err     error
	unacked error // with WithReplicaAcks: the WAIT after it fell short
	// done is closed when res, err and unacked are set, or, by giveUp,
	// when the call is abandoned before it was sent.
	done chan struct{}

	// Room for keys and the EVALSHA arguments, so that a call of
	// Backend.take is one allocation: EVALSHA, SHA1, 5 keys, and 9
	// arguments (relock.lua's, at most: with WithWaiterHints and
	// WithClockTokens).
	keyBuf [5]string
	cmdBuf [3 + 5 + 9]any
}

// newCall returns a call of s, whose SHA1 is sha, with keys and args.
//
// It builds the EVALSHA command Script.EvalSha would, but in the call's own
// storage when it has room, and with sha converted to an interface once per
// script: go-redis allocates the arguments' slice, converts the command's
// name and SHA1 afresh on every call, and the keys too (as here).
func newCall(s *redis.Script, sha any, keys []string, args ...any) *call {
	c := &call{s: s}
	c.keys = append(c.keyBuf[:0], keys...)
	cmd := append(c.cmdBuf[:0], "evalsha", sha, len(keys))
	for _, k := range keys {
		cmd = append(cmd, k)
	}
	n := len(cmd)
	cmd = append(cmd, args...)
	c.evalsha, c.args = cmd, cmd[n:]
	return c
}

func newBatcher(client redis.UniversalClient) *batcher {
	bt := &batcher{client: client}
	bt.cluster, _ = client.(*redis.ClusterClient)
	return bt
}

// do runs c (from newCall), as c.s.Run(ctx, client, c.keys, c.args...).Result()
// would (EVALSHA, then EVAL on NOSCRIPT), in a pipeline shared with the
// calls of other goroutines. It returns ctx.Err() as soon as ctx ends, or
// context.DeadlineExceeded as soon as timeout (when > 0) passes, even though
// the batch carrying the call may still be running. With a timeout ≤ 0,
// ctx's deadline (if any) is the call's. After close, calls go
// out one by one.
func (bt *batcher) do(ctx context.Context, timeout time.Duration, c *call) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.ctx, c.done = ctx, make(chan struct{})
	if timeout > 0 {
		c.deadline = time.Now().Add(timeout)
	} else if d, ok := ctx.Deadline(); ok {
		// No timeout of its own: ctx's deadline bounds the batch too, or it
		// would run up to the client's read timeout (for ever without one),
		// holding up the calls queued behind it and Close.
		c.deadline = d
	}
	addr := ""
	if bt.cluster != nil && len(c.keys) > 0 {
		// From the cached slot map (loaded on first use); on error the call
		// shares the lane of the calls whose master is unknown, and fails in
		// its pipeline.
		mctx, cancel := c.bounded(ctx)
		if node, err := bt.cluster.MasterForKey(mctx, c.keys[0]); err == nil {
			addr = node.Options().Addr
		}
		cancel()
	}
	bt.mu.Lock()
	if bt.closed && bt.acks.n > 0 {
		// Alone, but still with its WAIT, bounded by its timeout and by
		// ctx's deadline: exec runs on a context of its own.
		bt.mu.Unlock()
		if d, ok := ctx.Deadline(); ok && (c.deadline.IsZero() || d.Before(c.deadline)) {
			c.deadline = d
		}
		bt.exec([]*call{c}, nil)
		return c.res, c.err
	}
	if bt.closed {
		bt.mu.Unlock()
		rctx, cancel := c.bounded(ctx)
		defer cancel()
		return c.s.Run(rctx, bt.client, c.keys, c.args...).Result()
	}
	l := bt.lane(addr)
	l.queue = append(l.queue, c)
	l.queued.Store(int32(len(l.queue)))
	start := !l.flushing
	if start {
		l.flushing = true
		bt.wg.Add(1)
	}
	bt.mu.Unlock()
	if start {
		go bt.flush(l)
	}
	// The timeout is enforced with a recycled timer rather than a context
	// derived from ctx: that costs about four allocations per call, and
	// the batch does not use the caller's context for I/O anyway. No timer
	// when ctx ends first.
	var expired <-chan time.Time
	if !c.deadline.IsZero() {
		if d, ok := ctx.Deadline(); !ok || d.After(c.deadline) {
			t := getTimer(time.Until(c.deadline))
			defer putTimer(t)
			expired = t.C
		}
	}
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		return c.giveUp(ctx.Err())
	case <-expired:
		return c.giveUp(context.DeadlineExceeded)
	}
}

// giveUp is the end of a call whose caller stopped waiting with err: it
// takes the call out of its batch if it was not sent yet.
func (c *call) giveUp(err error) (any, error) {
	if c.state.CompareAndSwap(callQueued, callAbandoned) {
		close(c.done) // it will never run: nothing need wait for it
		return nil, err
	}
	select {
	case <-c.done: // answered meanwhile: take the answer
		return c.res, c.err
	default: // sent: the batch goes on without us
	}
	return nil, err
}

// bounded returns ctx bounded by the call's deadline, for the go-redis
// calls made on the caller's goroutine (where a timer cannot stop them).
func (c *call) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.deadline.IsZero() {
		return ctx, func() {}
	}
	return context.WithDeadline(ctx, c.deadline)
}

// timers recycles the timers that bound callers' waits (a new one costs
// two allocations).
var timers sync.Pool

func getTimer(d time.Duration) *time.Timer {
	if t, ok := timers.Get().(*time.Timer); ok {
		t.Reset(d)
		return t
	}
	return time.NewTimer(d)
}

// putTimer stops t and recycles it. With Go 1.23's synchronous timer
// channels Stop alone guarantees the next user no stale tick; the drain
// does it when GODEBUG asynctimerchan=1 brings the old timers back.
func putTimer(t *time.Timer) {
	if !t.Stop() {
		select {
		case <-t.C:
		default:
		}
	}
	timers.Put(t)
}

// lane returns the lane of addr; bt.mu is held.
func (bt *batcher) lane(addr string) *lane {
	if bt.cluster == nil {
		return &bt.lone
	}
	l := bt.lanes[addr]
	if l == nil {
		if bt.lanes == nil {
			bt.lanes = make(map[string]*lane)
		}
		l = &lane{addr: addr}
		bt.lanes[addr] = l
	}
	return l
}

// flush sends l's queue, one pipeline at a time, until it is empty.
func (bt *batcher) flush(l *lane) {
	defer bt.wg.Done()
	// With one P the callers just answered have run by the first yield, and
	// those in other calls cannot become runnable while the flusher polls.
	poll := runtime.GOMAXPROCS(0) > 1
	var (
		batch, sent []*call
		after       []func()
	)
	answered := 0
	for {
		if answered > 1 {
			// A lone caller has nobody to wait for.
			l.gather(answered, poll)
		}
		bt.mu.Lock()
		if len(l.queue) == 0 {
			l.flushing = false
			if bt.cluster != nil {
				if l.backoff == 0 {
					delete(bt.lanes, l.addr)
				} else {
					bt.keep(l)
				}
			}
			after, l.after = l.after, after[:0]
			bt.mu.Unlock()
			runAll(after)
			return
		}
		// Swap buffers, here and below: the lane gets the (empty) one
		// used last.
		batch, l.queue = l.queue, batch[:0]
		l.inflight = batch
		l.queued.Store(0)
		bt.mu.Unlock()
		sent = bt.exec(batch, sent[:0])
		answered = len(sent)
		clear(sent)
		bt.mu.Lock()
		l.inflight = nil
		after, l.after = l.after, after[:0]
		bt.mu.Unlock()
		runAll(after)
		clear(batch)
	}
}

// keep keeps l, a lane of the Cluster mode whose flusher stops after a
// wait in vain, in bt.lanes with its backoff, so that the next batch to its
// master does not wait in vain again; bt.mu is held. Masters come and go
// (failovers, resharding, nodes replaced at new addresses), and the lanes
// of departed ones would pile up for ever: once more than maxIdleLanes are
// in the map, it drops the idle lanes not kept among the last
// maxIdleLanes/2 (the masters in use keep theirs). A sweep leaves at most
// that many idle lanes, so sweeps are at least maxIdleLanes/2 keeps apart.
func (bt *batcher) keep(l *lane) {
	bt.kept++
	l.kept = bt.kept
	if len(bt.lanes) <= maxIdleLanes {
		return
	}
	for addr, o := range bt.lanes {
		if !o.flushing && bt.kept-o.kept >= maxIdleLanes/2 {
			delete(bt.lanes, addr)
		}
	}
}

func runAll(fs []func()) {
	for i, f := range fs {
		f()
		fs[i] = nil
	}
}

// afterRoundTrip has the flusher call f once the batch in flight, or the
// next one to leave, has been answered (or, should none leave, as it
// stops), and reports true. It reports false, and never calls f, when no
// flusher is running, and in Cluster mode (lanes come and go there).
// See Backend.AfterRoundTrip.
func (bt *batcher) afterRoundTrip(f func()) bool {
	bt.mu.Lock()
	defer bt.mu.Unlock()
	if bt.closed || bt.cluster != nil || !bt.lone.flushing {
		return false
	}
	bt.lone.after = append(bt.lone.after, f)
	return true
}

// gatherWait bounds how long a flusher that has just answered several
// calls waits for as many to be queued again before it sends the next batch.
const gatherWait = 20 * time.Microsecond

// maxSkipWaits bounds the batches a flusher sends without waiting after a
// wait in vain.
const maxSkipWaits = 64

// maxIdleLanes bounds, in Cluster mode, the lanes kept with no flusher (see
// batcher.keep).
const maxIdleLanes = 64

// gather lets the n callers just answered, which usually come straight back
// with their next call, queue again before the next batch leaves. It yields
// first: a caller readied on this P runs then. Callers the runtime moved to
// another P (the other core, on two) finish a few microseconds later, so it
// then polls, yielding, until n calls are queued or gatherWait has passed;
// without that each batch left without two or three of the eight
// benchmark goroutines, which then had to wait a whole round trip (about
// 0.17 round trips per call against 0.15, and about 4% fewer calls per
// second).
// Callers that do not loop would make every wait run its full course, so a
// wait in vain turns waiting off for 1, 2, 4, ... up to maxSkipWaits
// batches. With poll false it only yields.
func (l *lane) gather(n int, poll bool) {
	runtime.Gosched()
	if !poll {
		return
	}
	if l.skipWaits > 0 {
		l.skipWaits--
		return
	}
	maxWait := l.maxWait
	if maxWait == 0 {
		maxWait = gatherWait
	}
	start := time.Now()
	for int(l.queued.Load()) < n {
		if time.Since(start) > maxWait {
			l.backoff = min(max(2*l.backoff, 1), maxSkipWaits)
			l.skipWaits = l.backoff
			return
		}
		runtime.Gosched()
	}
	l.backoff = 0
}

// exec sends the calls still wanted as one pipeline (EVALSHA), then those
// that failed with NOSCRIPT again with EVAL, and hands out the answers.
// Errors are per command: a MOVED reply, or in Cluster mode a node that
// cannot be reached, fails only the calls it concerns. It returns the
// calls it answered, appended to sent (batch is left as it is: settle
// reads it meanwhile).
func (bt *batcher) exec(batch, sent []*call) []*call {
	var deadline time.Time
	unbounded := false
	for _, c := range batch {
		if !c.state.CompareAndSwap(callQueued, callSent) {
			continue
		}
		sent = append(sent, c)
		switch {
		case c.deadline.IsZero():
			unbounded = true
		case c.deadline.After(deadline):
			deadline = c.deadline
		}
	}
	if len(sent) == 0 {
		return sent
	}
	ctx := context.Background()
	if !unbounded {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	pipe := bt.client.Pipeline()
	for _, c := range sent {
		// c.s.EvalSha(c.ctx, pipe, c.keys, c.args...), from newCall's
		// ready arguments.
		c.cmd = redis.NewCmd(c.ctx, c.evalsha...)
		c.cmd.SetFirstKeyPos(3) // the first key, for Cluster routing
		_ = pipe.Process(c.ctx, c.cmd)
	}
	acked := bt.acks.wait(ctx, pipe)
	_, _ = pipe.Exec(ctx) // errors are per command
	unacked := bt.acks.check(acked)
	var retried []*call
	for _, c := range sent {
		c.unacked = unacked
		if isNoScript(c.cmd.Err()) {
			if retried == nil {
				pipe = bt.client.Pipeline()
			}
			retried = append(retried, c)
			c.cmd = c.s.Eval(c.ctx, pipe, c.keys, c.args...)
		}
	}
	if retried != nil {
		acked = bt.acks.wait(ctx, pipe)
		_, _ = pipe.Exec(ctx)
		unacked = bt.acks.check(acked)
		for _, c := range retried {
			c.unacked = unacked
		}
	}
	for _, c := range sent {
		c.res, c.err = c.cmd.Result()
		close(c.done)
	}
	return sent
}

// settle waits until the calls on the lock keys lockKey(i), i < n, that
// were queued or in flight when it was called have been answered, or given
// up before they were sent, or until ctx ends. Calls on one key go in one
// lane in order; an operation on the key sent after settle returns (on a
// connection of its own, outside the batcher) reaches the server after
// them. See Backend.Release and Backend.Leave. It returns the calls it
// stopped waiting for when ctx ended (nil when none).
func (bt *batcher) settle(ctx context.Context, n int, lockKey func(i int) string) (unsettled []*call) {
	// Only the calls on the keys asked for are copied, and only those not
	// answered yet: the mutex is the one every caller and the flusher take,
	// and a Release must not cost more with every call on other keys.
	var (
		one     string              // n == 1
		want    map[string]struct{} // n > 1
		keysSet bool
		pending []*call
	)
	collect := func(calls []*call) {
		for _, c := range calls {
			select {
			case <-c.done:
				continue // answered, or abandoned before it was sent
			default:
			}
			if !keysSet {
				keysSet = true
				if n == 1 {
					one = lockKey(0)
				} else {
					want = make(map[string]struct{}, n)
					for i := range n {
						want[lockKey(i)] = struct{}{}
					}
				}
			}
			k := c.keys[0]
			if n == 1 && k != one {
				continue
			}
			if n > 1 {
				if _, ok := want[k]; !ok {
					continue
				}
			}
			pending = append(pending, c)
		}
	}
	bt.mu.Lock()
	if n > 0 {
		collect(bt.lone.inflight)
		collect(bt.lone.queue)
		for _, l := range bt.lanes {
			collect(l.inflight)
			collect(l.queue)
		}
	}
	bt.mu.Unlock()
	for _, c := range pending {
		if bt.settleWaits != nil {
			bt.settleWaits()
			bt.settleWaits = nil
		}
		if ctx.Err() == nil {
			select {
			case <-c.done:
			case <-ctx.Done():
			}
		}
		select {
		case <-c.done:
		default:
			unsettled = append(unsettled, c)
		}
	}
	return unsettled
}

// later runs f, which waits for calls (from settle), in a goroutine of its
// own, which close waits for, and reports true. Once the batcher is closed
// it still does while one of calls is unanswered: its flusher is running
// then (close is waiting for it, the WaitGroup's count is not zero), and f
// must run after it. Otherwise, once closed, it does nothing and reports
// false: the caller runs f itself.
func (bt *batcher) later(calls []*call, f func()) bool {
	bt.mu.Lock()
	defer bt.mu.Unlock()
	if bt.closed {
		pending := false
		for _, c := range calls {
			select {
			case <-c.done:
			default:
				pending = true
			}
		}
		if !pending {
			return false
		}
	}
	bt.wg.Add(1)
	go func() {
		defer bt.wg.Done()
		f()
	}()
	return true
}

// close makes new calls bypass the batcher and waits for the batches in
// flight (each bounded by its calls' timeouts or the client's timeouts) and
// for the functions later started (releaseAfter's second releases).
// It is idempotent.
func (bt *batcher) close() {
	bt.mu.Lock()
	bt.closed = true
	bt.mu.Unlock()
	bt.wg.Wait()
}
