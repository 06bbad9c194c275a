package ctxlock_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/locktest"
)

// wqBackend is an in-process, fake-time-safe Backend with a server-side
// waiter queue (ctxlock.WaiterQueue) and directed hand-off, re-implementing
// the semantics of backends/goredis's scripts (acquire.lua, relock.lua,
// release.lua, leave.lua, queue.lua, extend.lua) so that the Manager's
// WaiterQueue path can run under testing/synctest. With cfg.hintWindow > 0
// it is the scripts' WithWaiterHints mode (as on each node of redlock): a
// release does not grant the key but keeps it free for the first live
// waiter for the window and tells that waiter alone (a zero Handoff, a
// hint); waiters queue in the byte order of their ids; a refused relock
// does not queue its waiter; the queue's first waiter takes the key with a
// relock even when it was wanted.
//
// Differences from Redis, by design:
//   - The whole store is one server; WatchWaiter is keyed by waiter id
//     alone (Redis: one inbox per Backend, dispatched by waiter id), so the
//     effect is the same.
//   - Entries' deadlines, TTLs and the refusal's remaining TTL are exact
//     time.Durations, not whole ms (Redis's PTTL rounds down, to 1 at least).
//   - Queue lists do not expire as a whole (Redis: PEXPIRE 2*keep); entries
//     still lapse individually, which is what first_waiter looks at.
//   - Options beyond Redis: grantOnLapse (a lapse hands the key to the first
//     live waiter, as a release does; Redis leaves it to the waiter's next
//     retry), and the fault switches: notifications dropped or delayed,
//     calls applied before their (lost) reply, evictions, outages.
type wqBackend struct {
	unavailable atomic.Bool
	latency     atomic.Int64

	mu      sync.Mutex
	keys    map[string]*wqEntry
	waiters map[string]*wqWaiterWatch
	closed  bool
	timers  map[*time.Timer]struct{} // delayed deliveries
	wasDown bool
	// leaveFails counts, per key, Leave calls that failed: their waiters
	// stay queued until their keep passes.
	leaveFails map[string]int

	cfg   wqConfig
	rng   *rand.Rand // guarded by mu
	stats wqStats
	// trace, when t0 is set: what the store did, for the model's trace.
	t0    time.Time
	trace []wqEvent
}

type wqEvent struct {
	at  time.Time
	msg string
}

func (b *wqBackend) logLocked(format string, args ...any) {
	if b.t0.IsZero() {
		return
	}
	now := time.Now()
	b.trace = append(b.trace, wqEvent{now, fmt.Sprintf("%10v   store: ", now.Sub(b.t0)) + fmt.Sprintf(format, args...)})
}

// Trace returns the store's events.
func (b *wqBackend) Trace() []wqEvent {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.trace)
}

type wqConfig struct {
	keep         time.Duration // how long a queued waiter keeps its place without retrying
	dropP        float64       // probability that a hand-off notification is lost
	delayP       float64       // probability that one is delayed (by up to maxDelay)
	maxDelay     time.Duration
	earlyP       float64 // probability that a slow call takes effect before its (possibly lost) reply
	grantOnLapse bool    // a lapse hands the key to the first live waiter (hints mode: hints it)
	notifyLapses bool    // plain watchers hear lapses (Redis: with keyspace notifications)
	hintOnUp     bool    // the end of an outage hints every waiter (as a resubscription does)
	// hintWindow > 0: WithWaiterHints(hintWindow) (queue.lua's hint,
	// kept_for_other, place).
	hintWindow time.Duration
}

func (c wqConfig) hints() bool { return c.hintWindow > 0 }

func (c wqConfig) String() string {
	return fmt.Sprintf("keep=%v drop=%.2f delay=%.2f/%v early=%.2f grantOnLapse=%v notifyLapses=%v hintOnUp=%v hintWindow=%v",
		c.keep, c.dropP, c.delayP, c.maxDelay, c.earlyP, c.grantOnLapse, c.notifyLapses, c.hintOnUp, c.hintWindow)
}

type wqStats struct {
	Grants, LapseGrants, Adopted, Dropped, Delayed, Delivered, Hints int
	Queued, DeadDropped, Leaves, YieldQueued, YieldPlain, Evictions  int
	Early, QueueHints, Kept                                          int
}

type wqEntry struct {
	owner, meta string // owner "" when free
	expires     time.Time
	fence       uint64
	wantedUntil time.Time
	queue       []string
	qd          map[string]wqWaiting
	watchers    map[*wqPlainWatch]struct{}
	timer       *time.Timer // lapse timer, while held
	// hinted, hintUntil: queue.lua's "\0hint" field (hints mode): the last
	// waiter hinted, and the end of its window.
	hinted    string
	hintUntil time.Time
}

type wqWaiting struct {
	deadline time.Time
	ttl      time.Duration // the TTL of a grant: the waiter's, at most keep
	meta     string
}

type wqWaiterWatch struct{ ch chan ctxlock.Handoff }
type wqPlainWatch struct{ ch chan struct{} }

var (
	_ ctxlock.Backend            = (*wqBackend)(nil)
	_ ctxlock.WaiterQueue        = (*wqBackend)(nil)
	_ ctxlock.Relocker           = (*wqBackend)(nil)
	_ ctxlock.ContentionReporter = (*wqBackend)(nil)
)

func newWQBackend(cfg wqConfig, seed uint64) *wqBackend {
	if cfg.keep <= 0 {
		cfg.keep = 3 * time.Second // goredis.DefaultWaiterKeep
	}
	return &wqBackend{
		keys:       map[string]*wqEntry{},
		waiters:    map[string]*wqWaiterWatch{},
		timers:     map[*time.Timer]struct{}{},
		leaveFails: map[string]int{},
		cfg:        cfg,
		rng:        rand.New(rand.NewPCG(seed, 0x7771)),
	}
}

func (b *wqBackend) BackendName() string { return "wqfake" }
func (b *wqBackend) FakeTimeSafe() bool  { return true }

func (b *wqBackend) Stats() wqStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

// SetUnavailable fails every call while down. Its end hints every waiter
// when cfg.hintOnUp (a resubscription after an outage does, on Redis).
func (b *wqBackend) SetUnavailable(down bool) {
	b.unavailable.Store(down)
	b.mu.Lock()
	defer b.mu.Unlock()
	if down {
		b.wasDown = true
		return
	}
	if b.wasDown && b.cfg.hintOnUp && !b.closed {
		for _, w := range b.waiters {
			b.stats.Hints++
			select {
			case w.ch <- ctxlock.Handoff{}:
			default:
			}
		}
		for _, e := range b.keys {
			notifyPlain(e)
		}
	}
	b.wasDown = false
}

func (b *wqBackend) SetLatency(d time.Duration) { b.latency.Store(int64(d)) }

func (b *wqBackend) Holder(key string) (owner, metadata string, token uint64, remaining time.Duration, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.keys[key]
	if e == nil || b.liveLocked(e, time.Now()) == false {
		return "", "", 0, 0, false
	}
	return e.owner, e.meta, e.fence, time.Until(e.expires), true
}

// Evict forgets key's lease (its counter and queue survive), as data loss
// would. Nobody is told: queued waiters find the key free at their next
// retry, the holder at its next refresh.
func (b *wqBackend) Evict(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e := b.keys[key]; e != nil && e.owner != "" {
		e.owner, e.meta = "", ""
		b.stats.Evictions++
		if e.timer != nil {
			e.timer.Stop()
			e.timer = nil
		}
		notifyPlain(e)
	}
}

func (b *wqBackend) coin(p float64) bool {
	return p > 0 && b.rng.Float64() < p
}

// call runs apply (under b.mu) as a call of the store: after the latency
// (no effect when the caller's timeout or ctx ends first), or, with
// probability cfg.earlyP, at once, its reply then taking the latency (and
// lost if the caller gives up first: the outcome is unknown to it).
func (b *wqBackend) call(ctx context.Context, timeout time.Duration, apply func()) error {
	run := func() error {
		if b.unavailable.Load() {
			return ctxlock.Unavailable(errors.New("wqfake: store unavailable (test switch)"))
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.closed {
			return errors.New("wqfake: closed")
		}
		apply()
		return nil
	}
	d := time.Duration(b.latency.Load())
	if d <= 0 {
		return run()
	}
	b.mu.Lock()
	early := b.coin(b.cfg.earlyP)
	b.mu.Unlock()
	if early {
		if err := run(); err != nil {
			return err
		}
	}
	if timeout <= 0 || timeout > d {
		timeout = d + 1
	}
	t := time.NewTimer(min(d, timeout))
	defer t.Stop()
	select {
	case <-t.C:
		if timeout <= d {
			if early {
				b.mu.Lock()
				b.stats.Early++
				b.mu.Unlock()
			}
			return ctxlock.Unavailable(fmt.Errorf("wqfake: call timed out after %v: %w", timeout, context.DeadlineExceeded))
		}
	case <-ctx.Done():
		return ctxlock.Unavailable(context.Cause(ctx))
	}
	if !early {
		return run()
	}
	return nil
}

func (b *wqBackend) entryLocked(key string) *wqEntry {
	e := b.keys[key]
	if e == nil {
		e = &wqEntry{qd: map[string]wqWaiting{}}
		b.keys[key] = e
	}
	return e
}

// liveLocked reports whether e is held at now, clearing a lapsed lease.
func (b *wqBackend) liveLocked(e *wqEntry, now time.Time) bool {
	if e.owner == "" {
		return false
	}
	if !now.Before(e.expires) {
		e.owner, e.meta = "", ""
		return false
	}
	return true
}

func (e *wqEntry) wanted(now time.Time) bool { return now.Before(e.wantedUntil) }

// firstWaiterLocked is queue.lua's first_waiter: the first live waiter,
// dropping the dead ones ahead of it.
func (b *wqBackend) firstWaiterLocked(e *wqEntry, now time.Time) (string, wqWaiting, bool) {
	for len(e.queue) > 0 {
		head := e.queue[0]
		w, ok := e.qd[head]
		if ok && w.deadline.After(now) {
			return head, w, true
		}
		e.queue = e.queue[1:]
		delete(e.qd, head)
		b.stats.DeadDropped++
		b.logLocked("drop dead waiter %s", short(head))
	}
	return "", wqWaiting{}, false
}

// enqueueLocked is queue.lua's enqueue (arrival order).
func (b *wqBackend) enqueueLocked(e *wqEntry, waiter string, ttl time.Duration, meta string, now time.Time) {
	_, had := e.qd[waiter]
	e.qd[waiter] = wqWaiting{deadline: now.Add(b.cfg.keep), ttl: min(ttl, b.cfg.keep), meta: meta}
	if !had {
		if b.cfg.hints() {
			// queue.lua's place: in the byte order of waiter ids.
			i, _ := slices.BinarySearch(e.queue, waiter)
			e.queue = slices.Insert(e.queue, i, waiter)
		} else {
			e.queue = append(e.queue, waiter)
		}
		b.stats.Queued++
		b.logLocked("queue %s (len %d)", short(waiter), len(e.queue))
	}
}

func (e *wqEntry) dequeue(waiter string) {
	if waiter == "" {
		return
	}
	if _, ok := e.qd[waiter]; !ok {
		return
	}
	delete(e.qd, waiter)
	for i, w := range e.queue {
		if w == waiter {
			e.queue = append(e.queue[:i:i], e.queue[i+1:]...)
			return
		}
	}
}

// grantToken is queue.lua's grant_token: the token of a lease that a
// release granted to waiter.
func grantToken(owner, waiter string) (uint64, bool) {
	rest, ok := strings.CutPrefix(owner, waiter+":")
	if !ok || rest == "" {
		return 0, false
	}
	tok, err := strconv.ParseUint(rest, 10, 64)
	return tok, err == nil
}

func (b *wqBackend) setLeaseLocked(key string, e *wqEntry, owner, meta string, ttl time.Duration, now time.Time) {
	e.owner, e.meta, e.expires = owner, meta, now.Add(ttl)
	b.armLocked(key, e)
}

func (b *wqBackend) armLocked(key string, e *wqEntry) {
	d := time.Until(e.expires)
	if e.timer == nil {
		e.timer = time.AfterFunc(d, func() { b.lapsed(key) })
	} else {
		e.timer.Reset(d)
	}
}

func (b *wqBackend) lapsed(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.keys[key]
	if e == nil || b.closed || e.owner == "" {
		return
	}
	now := time.Now()
	if b.liveLocked(e, now) {
		b.armLocked(key, e)
		return
	}
	e.timer = nil
	if b.cfg.notifyLapses {
		notifyPlain(e)
	}
	if b.cfg.grantOnLapse {
		if head, w, ok := b.firstWaiterLocked(e, now); ok {
			b.stats.LapseGrants++
			if b.cfg.hints() {
				b.hintLocked(e, head, now)
			} else {
				b.handOverLocked(key, e, head, w, now)
			}
		}
	}
}

// handOverLocked is queue.lua's hand_over: the key goes to head with a new
// token, and head is told.
func (b *wqBackend) handOverLocked(key string, e *wqEntry, head string, w wqWaiting, now time.Time) {
	e.queue = e.queue[1:]
	delete(e.qd, head)
	e.fence++
	b.setLeaseLocked(key, e, ctxlock.GrantOwner(head, e.fence), w.meta, w.ttl, now)
	b.stats.Grants++
	b.logLocked("%s granted to %s token %d ttl %v (queue %d left)", key, short(head), e.fence, w.ttl, len(e.queue))
	b.deliverLocked(head, ctxlock.Handoff{Token: e.fence, TTL: w.ttl})
}

// hintLocked is queue.lua's hint: head, the first live waiter, is told
// that the key is free (a zero Handoff), which is kept for it for the hint
// window. The hint is subject to the same faults as a grant's message.
func (b *wqBackend) hintLocked(e *wqEntry, head string, now time.Time) {
	e.hinted, e.hintUntil = head, now.Add(b.cfg.hintWindow)
	b.stats.QueueHints++
	b.logLocked("hint %s (kept until +%v)", short(head), b.cfg.hintWindow)
	b.deliverLocked(head, ctxlock.Handoff{})
}

// keptForOtherLocked is queue.lua's kept_for_other: how long the free key
// is still kept for head (the first live waiter, if hasHead) because a hint
// told it less than the window ago, when the caller (waiter, or "") is
// someone else.
func (b *wqBackend) keptForOtherLocked(e *wqEntry, head string, hasHead bool, waiter string, now time.Time) (time.Duration, bool) {
	if !hasHead || head == waiter {
		return 0, false
	}
	if e.hinted != head {
		return 0, false
	}
	left := e.hintUntil.Sub(now)
	return left, left > 0
}

// deliverLocked passes a hand-off to waiter's watcher, if any listens when
// it arrives: at once, later, or never (a lost message).
func (b *wqBackend) deliverLocked(waiter string, h ctxlock.Handoff) {
	if b.coin(b.cfg.dropP) {
		b.stats.Dropped++
		b.logLocked("hand-off %d to %s dropped", h.Token, short(waiter))
		return
	}
	if b.coin(b.cfg.delayP) {
		b.stats.Delayed++
		d := time.Duration(b.rng.Int64N(int64(b.cfg.maxDelay) + 1))
		b.logLocked("hand-off %d to %s delayed %v", h.Token, short(waiter), d)
		var t *time.Timer
		t = time.AfterFunc(d, func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			delete(b.timers, t)
			if !b.closed {
				b.sendLocked(waiter, h)
			}
		})
		b.timers[t] = struct{}{}
		return
	}
	b.sendLocked(waiter, h)
}

func (b *wqBackend) sendLocked(waiter string, h ctxlock.Handoff) {
	w := b.waiters[waiter]
	if w == nil {
		b.logLocked("hand-off %d to %s: nobody listens", h.Token, short(waiter))
		return
	}
	b.logLocked("hand-off %d to %s delivered", h.Token, short(waiter))
	b.stats.Delivered++
	select { // a grant replaces a pending message
	case <-w.ch:
	default:
	}
	w.ch <- h
}

func notifyPlain(e *wqEntry) {
	for w := range e.watchers {
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
}

// refusedLocked is queue.lua's refused.
func (b *wqBackend) refusedLocked(e *wqEntry, held bool, kept time.Duration, now time.Time) error {
	pttl := kept
	if kept > 0 {
		b.stats.Kept++
	}
	if held {
		// Exact, not PTTL's whole ms rounded down (to 1 when 0): the
		// conformance suite asserts instants under fake time.
		pttl = e.expires.Sub(now)
		e.wantedUntil = now.Add(pttl)
	}
	return &ctxlock.HeldError{Remaining: pttl, Fence: e.fence}
}

func (b *wqBackend) takeLocked(req ctxlock.AcquireRequest, e *wqEntry, now time.Time) ctxlock.Lease {
	e.fence++
	b.setLeaseLocked(req.Key, e, req.Owner, req.Metadata, req.TTL, now)
	return ctxlock.Lease{Key: req.Key, Owner: req.Owner, Token: e.fence}
}

func validWQ(req ctxlock.AcquireRequest) error {
	if req.Key == "" || req.Owner == "" || req.TTL <= 0 {
		return fmt.Errorf("wqfake: invalid acquire request (key %q, owner %q, ttl %v)", req.Key, req.Owner, req.TTL)
	}
	return nil
}

// acquireLocked is acquire.lua.
func (b *wqBackend) acquireLocked(req ctxlock.AcquireRequest, now time.Time) (ctxlock.Lease, error) {
	e := b.entryLocked(req.Key)
	held := b.liveLocked(e, now)
	if !held && len(e.queue) == 0 {
		return b.takeLocked(req, e, now), nil
	}
	head, _, hasHead := b.firstWaiterLocked(e, now)
	if held && e.owner == req.Owner && e.meta == req.Metadata {
		e.expires = now.Add(req.TTL)
		b.armLocked(req.Key, e)
		return ctxlock.Lease{Key: req.Key, Owner: req.Owner, Token: e.fence}, nil
	}
	if held && req.Waiter != "" {
		if tok, ok := grantToken(e.owner, req.Waiter); ok {
			e.expires = now.Add(req.TTL)
			b.armLocked(req.Key, e)
			b.stats.Adopted++
			return ctxlock.Lease{Key: req.Key, Owner: ctxlock.GrantOwner(req.Waiter, tok), Token: tok}, nil
		}
	}
	var kept time.Duration
	isKept := false
	if !held && b.cfg.hints() {
		kept, isKept = b.keptForOtherLocked(e, head, hasHead, req.Waiter, now)
	}
	if !held && (!hasHead || head == req.Waiter || (b.cfg.hints() && !isKept)) {
		if hasHead && head == req.Waiter {
			e.queue = e.queue[1:]
			delete(e.qd, head)
		} else if hasHead && b.cfg.hints() {
			e.dequeue(req.Waiter)
		}
		return b.takeLocked(req, e, now), nil
	}
	if req.Waiter != "" {
		b.enqueueLocked(e, req.Waiter, req.TTL, req.Metadata, now)
	}
	return ctxlock.Lease{}, b.refusedLocked(e, held, kept, now)
}

func (b *wqBackend) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (lease ctxlock.Lease, err error) {
	if err := validWQ(req); err != nil {
		return ctxlock.Lease{}, err
	}
	if cerr := b.call(ctx, req.Timeout, func() {
		lease, err = b.acquireLocked(req, time.Now())
		b.logLocked("acquire %s o=%s w=%s ttl=%v: %v %v", req.Key, short(req.Owner), short(req.Waiter), req.TTL, lease.Token, err)
	}); cerr != nil {
		return ctxlock.Lease{}, cerr
	}
	return lease, err
}

// relockLocked is relock.lua.
func (b *wqBackend) relockLocked(old ctxlock.Lease, req ctxlock.AcquireRequest, now time.Time) (ctxlock.Lease, bool, bool, error) {
	e := b.entryLocked(req.Key)
	held := b.liveLocked(e, now)
	if held && e.owner == old.Owner && !e.wanted(now) && len(e.queue) == 0 {
		return b.takeLocked(req, e, now), false, false, nil
	}
	head, hw, hasHead := b.firstWaiterLocked(e, now)
	// With hints, the caller's own waiter first in line is next: no one to
	// yield to.
	mine := b.cfg.hints() && hasHead && head == req.Waiter
	if held && e.owner == old.Owner {
		wanted := e.wanted(now)
		e.wantedUntil = time.Time{}
		if !mine && (wanted || hasHead) {
			if hasHead {
				queued := false
				if req.Waiter != "" {
					b.enqueueLocked(e, req.Waiter, req.TTL, req.Metadata, now)
					queued = true
				}
				b.stats.YieldQueued++
				if b.cfg.hints() {
					e.owner, e.meta = "", ""
					b.stopTimerLocked(e)
					b.hintLocked(e, head, now)
				} else {
					b.handOverLocked(req.Key, e, head, hw, now)
				}
				return ctxlock.Lease{}, true, queued, nil
			}
			e.owner, e.meta = "", ""
			b.stopTimerLocked(e)
			b.stats.YieldPlain++
			notifyPlain(e)
			return ctxlock.Lease{}, true, false, nil
		}
		held = false
		e.owner, e.meta = "", ""
		b.stopTimerLocked(e)
	}
	if held && req.Waiter != "" {
		if tok, ok := grantToken(e.owner, req.Waiter); ok {
			e.expires = now.Add(req.TTL)
			b.armLocked(req.Key, e)
			b.stats.Adopted++
			return ctxlock.Lease{Key: req.Key, Owner: ctxlock.GrantOwner(req.Waiter, tok), Token: tok}, false, false, nil
		}
	}
	var kept time.Duration
	isKept := false
	if !held && b.cfg.hints() {
		kept, isKept = b.keptForOtherLocked(e, head, hasHead, req.Waiter, now)
	}
	if !held && (!hasHead || (req.Waiter != "" && head == req.Waiter) || (b.cfg.hints() && !isKept)) {
		if hasHead {
			e.dequeue(req.Waiter)
		}
		return b.takeLocked(req, e, now), false, false, nil
	}
	if held && e.owner == req.Owner && e.meta == req.Metadata {
		e.expires = now.Add(req.TTL)
		b.armLocked(req.Key, e)
		return ctxlock.Lease{Key: req.Key, Owner: req.Owner, Token: e.fence}, false, false, nil
	}
	// With hints (redlock's nodes) a refused relock does not queue.
	queue := req.Waiter != "" && !b.cfg.hints()
	if queue {
		b.enqueueLocked(e, req.Waiter, req.TTL, req.Metadata, now)
	}
	return ctxlock.Lease{}, false, queue, b.refusedLocked(e, held, kept, now)
}

func (b *wqBackend) stopTimerLocked(e *wqEntry) {
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
}

func (b *wqBackend) Relock(ctx context.Context, old ctxlock.Lease, req ctxlock.AcquireRequest) (lease ctxlock.Lease, wanted, queued bool, err error) {
	if err := validWQ(req); err != nil {
		return ctxlock.Lease{}, false, false, err
	}
	if old.Key != req.Key {
		if errs := b.Release(ctx, []ctxlock.Lease{old}); errs[0] != nil {
			return ctxlock.Lease{}, false, false, errs[0]
		}
		lease, err := b.Acquire(ctx, req)
		return lease, false, false, err
	}
	if cerr := b.call(ctx, req.Timeout, func() {
		lease, wanted, queued, err = b.relockLocked(old, req, time.Now())
		b.logLocked("relock %s old=%s o=%s w=%s: %v wanted=%v queued=%v %v", req.Key, short(old.Owner), short(req.Owner), short(req.Waiter), lease.Token, wanted, queued, err)
	}); cerr != nil {
		return ctxlock.Lease{}, false, false, cerr
	}
	return lease, wanted, queued, err
}

func (b *wqBackend) Extend(ctx context.Context, leases []ctxlock.Lease, ttl time.Duration) []error {
	errs := make([]error, len(leases))
	if cerr := b.call(ctx, 0, func() {
		now := time.Now()
		for i, l := range leases {
			if ttl <= 0 {
				errs[i] = fmt.Errorf("wqfake: extend: %w: TTL %v", ctxlock.ErrInvalidOption, ttl)
				continue
			}
			e := b.keys[l.Key]
			if e == nil || !b.liveLocked(e, now) || e.owner != l.Owner {
				errs[i] = fmt.Errorf("wqfake: extend %q: %w", l.Key, ctxlock.ErrLost)
				b.logLocked("extend %s o=%s: lost", l.Key, short(l.Owner))
				continue
			}
			e.expires = now.Add(ttl)
			b.armLocked(l.Key, e)
		}
	}); cerr != nil {
		return fillErr(len(leases), cerr)
	}
	return errs
}

func fillErr(n int, err error) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
}

func (b *wqBackend) Release(ctx context.Context, leases []ctxlock.Lease) []error {
	errs, _ := b.ReleaseContended(ctx, leases)
	return errs
}

// ReleaseContended is release.lua per lease.
func (b *wqBackend) ReleaseContended(ctx context.Context, leases []ctxlock.Lease) ([]error, []bool) {
	var contended []bool
	if cerr := b.call(ctx, 0, func() {
		now := time.Now()
		for i, l := range leases {
			e := b.keys[l.Key]
			if e == nil || !b.liveLocked(e, now) || e.owner != l.Owner {
				b.logLocked("release %s o=%s: not owned", l.Key, short(l.Owner))
				continue
			}
			b.logLocked("release %s o=%s token %d", l.Key, short(l.Owner), l.Token)
			wanted := e.wanted(now)
			e.wantedUntil = time.Time{}
			c := wanted
			if head, w, ok := b.firstWaiterLocked(e, now); ok {
				if b.cfg.hints() {
					e.owner, e.meta = "", ""
					b.stopTimerLocked(e)
					b.hintLocked(e, head, now)
				} else {
					b.handOverLocked(l.Key, e, head, w, now)
				}
				c = true
			} else {
				e.owner, e.meta = "", ""
				if e.timer != nil {
					e.timer.Stop()
					e.timer = nil
				}
				notifyPlain(e)
			}
			if c {
				if contended == nil {
					contended = make([]bool, len(leases))
				}
				contended[i] = true
			}
		}
	}); cerr != nil {
		return fillErr(len(leases), cerr), nil
	}
	return make([]error, len(leases)), contended
}

// Leave is leave.lua.
func (b *wqBackend) Leave(ctx context.Context, key, waiter string) error {
	err := b.leave(ctx, key, waiter)
	if err != nil {
		b.mu.Lock()
		b.leaveFails[key]++
		b.mu.Unlock()
	}
	return err
}

// LeaveFails reports how many Leave calls of key failed.
func (b *wqBackend) LeaveFails(key string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.leaveFails[key]
}

func (b *wqBackend) leave(ctx context.Context, key, waiter string) error {
	return b.call(ctx, 0, func() {
		now := time.Now()
		b.stats.Leaves++
		b.logLocked("leave %s w=%s", key, short(waiter))
		e := b.entryLocked(key)
		e.dequeue(waiter)
		held := b.liveLocked(e, now)
		_, granted := grantToken(e.owner, waiter)
		granted = held && granted
		if !held || granted {
			head, w, ok := b.firstWaiterLocked(e, now)
			if ok && !b.cfg.hints() {
				b.handOverLocked(key, e, head, w, now)
				return
			}
			if granted {
				e.owner, e.meta = "", ""
				b.stopTimerLocked(e)
			}
			if ok {
				b.hintLocked(e, head, now)
			} else {
				notifyPlain(e)
			}
		}
	})
}

func (b *wqBackend) WatchWaiter(key, waiter string) (<-chan ctxlock.Handoff, func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, func() {}
	}
	w := &wqWaiterWatch{ch: make(chan ctxlock.Handoff, 1)}
	b.waiters[waiter] = w
	var once sync.Once
	return w.ch, func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.waiters[waiter] == w {
				delete(b.waiters, waiter)
			}
		})
	}
}

// Watch hears releases nobody was queued for (and lapses with
// cfg.notifyLapses), as a key's channel on Redis does.
func (b *wqBackend) Watch(key string) (<-chan struct{}, func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, func() {}
	}
	w := &wqPlainWatch{ch: make(chan struct{}, 1)}
	e := b.entryLocked(key)
	if e.watchers == nil {
		e.watchers = map[*wqPlainWatch]struct{}{}
	}
	e.watchers[w] = struct{}{}
	var once sync.Once
	return w.ch, func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			delete(e.watchers, w)
		})
	}
}

func (b *wqBackend) Health(ctx context.Context) ([]string, error) {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return []string{"wqfake: closed"}, errors.New("wqfake: closed")
	}
	if b.unavailable.Load() {
		return []string{"wqfake: unavailable"}, ctxlock.Unavailable(errors.New("wqfake: unavailable"))
	}
	return nil, nil
}

func (b *wqBackend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for _, e := range b.keys {
		if e.timer != nil {
			e.timer.Stop()
			e.timer = nil
		}
	}
	for t := range b.timers {
		t.Stop()
	}
	b.timers = nil
	return nil
}

// TestWaiterQueueFakeConformance checks the fake against the contract:
// the conformance suite, under fake time, on plain and faulty settings.
func TestWaiterQueueFakeConformance(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  wqConfig
	}{
		{"redis-like", wqConfig{}},
		{"lossy", wqConfig{keep: 1500 * time.Millisecond, dropP: 0.5, delayP: 0.5, maxDelay: 300 * time.Millisecond, grantOnLapse: true, notifyLapses: true}},
		{"hints", wqConfig{hintWindow: 50 * time.Millisecond}},
		{"hints-lossy", wqConfig{keep: 1500 * time.Millisecond, dropP: 0.5, delayP: 0.5, maxDelay: 300 * time.Millisecond, grantOnLapse: true, notifyLapses: true, hintWindow: 200 * time.Millisecond}},
	} {
		t.Run(c.name, func(t *testing.T) {
			locktest.Run(t, func(t *testing.T) ctxlock.Backend { return newWQBackend(c.cfg, 1) })
		})
	}
}

// short abbreviates an owner or waiter id for traces.
func short(id string) string {
	if i := strings.LastIndexByte(id, ':'); i > 0 && i < len(id)-1 {
		if _, err := strconv.ParseUint(id[i+1:], 10, 64); err == nil {
			return short(id[:i]) + ":" + id[i+1:] // a grant owner
		}
	}
	if len(id) > 8 {
		return id[len(id)-8:]
	}
	return id
}
