package ctxlock

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	ctxlockotel "github.com/ctxlock/ctxlock/otel"
)

// Manager makes Lock values on one Backend and runs the single scheduler
// goroutine that refreshes their leases, ends holds at their validity
// deadline and retries releases. It implements LockManager.
//
// NewManager and NewLock do no I/O and start no goroutine; the scheduler
// starts with the first hold or queued release. Close the Manager when
// done: Close releases every held lock, drains pending releases and stops
// every goroutine the Manager started. The Manager does not own its
// Backend: close the Backend after the Managers that use it.
//
// Make Managers with NewManager. The zero Manager has no Backend and acts
// as NewManager(nil) does: its locks' Lock and TryLock calls and Health
// fail with ErrNilBackend, and Close returns nil.
type Manager struct {
	backend     Backend
	backendName string
	namespace   string
	defaults    []LockOption
	initErr     error
	log         *slog.Logger
	obs         *ctxlockotel.Instrumentation
	ownerPrefix string
	ownerSeq    atomic.Uint64
	workerLimit int
	// reportsContention: the backend implements ContentionReporter.
	reportsContention bool
	// instant: the backend releases in line (see InstantReleaser).
	instant     InstantReleaser
	relocker    Relocker    // the backend, when it implements Relocker
	queue       WaiterQueue // the backend, when it implements WaiterQueue
	stopDeletes func()      // unregisters keyDeleted, when the backend implements DeleteNotifier
	// roundTrips is the backend, when it implements RoundTripNotifier;
	// afterRoundTripFunc is m.afterRoundTrip, made once.
	roundTrips         RoundTripNotifier
	afterRoundTripFunc func()
	// afterRoundTripSet: an afterRoundTrip call is due; the releases queued
	// meanwhile wait for it to wake the scheduler. Set with mu held.
	afterRoundTripSet atomic.Bool
	// rtt is a moving average of acquire round trips (ns), for yields.
	rtt atomic.Int64

	// bg is the context of background backend calls; cancelled by Close.
	bg       context.Context
	cancelBg context.CancelFunc
	workers  errgroup.Group
	// slots bounds the workers running (cap workerLimit). Not the group's
	// SetLimit: the group frees a slot only after the worker's function
	// has returned, i.e. after its wake-up of the scheduler, which could
	// then find no slot free and sleep with a job left undispatched.
	slots chan struct{}
	// checks counts Health calls in the backend, including those whose
	// caller has gone (see backendHealth): Close waits for them as for
	// workers. Added to only with mu held and the Manager open, so never
	// after Close has begun waiting.
	checks sync.WaitGroup

	done      chan struct{} // closed when Close starts
	stop      chan struct{} // closed to stop the scheduler
	stopped   chan struct{} // closed when the scheduler has returned (or never ran)
	closeDone chan struct{} // closed when the first Close returns
	wake      chan struct{} // cap 1: nudges the scheduler
	closeOnce sync.Once

	mu        sync.Mutex
	closed    bool
	running   bool // the scheduler goroutine was started
	keys      map[string]*keyState
	holds     deadlineHeap[*hold]
	releases  deadlineHeap[*release]
	maxWindow time.Duration // the widest refresh batching window of any hold
	pending   int           // releases not yet confirmed, queued or in flight
	// closingRepeats counts the repeats Close sent once more (see
	// repeatLocked) and has not seen answered.
	closingRepeats int
	// failingHolds counts holds whose latest refresh failed (Health).
	failingHolds int
	// attempts counts Lock and TryLock calls that have made a backend
	// attempt and not yet returned: Close waits for them (they return
	// ErrClosed once it has begun), so that what they took is released and
	// the waiter queue left before it returns.
	attempts int
	// releasesAbandoned is set once Close has stopped the scheduler:
	// pending stays 0 from then on.
	releasesAbandoned bool
	// draining is true while Close waits for pending releases and Lock
	// calls: a release queued then is sent (the scheduler runs until the
	// wait ends), one queued after it would not be.
	draining bool
	// leaves has the cancel function of each leaveLater goroutine running.
	leaves    map[uint64]context.CancelFunc
	nextLeave uint64
	timerAt   time.Time     // when the scheduler wakes by itself; zero: never
	drained   chan struct{} // while Close waits: closed when no release or leave is left
	// endedHolds are hold ends to record once the mutex is released (unlock),
	// pendingDelta the change in pending releases and warnings the log
	// records: user code (tracer, meter, logger) never runs with mu held.
	endedHolds   []endedHold
	pendingDelta int
	warnings     []warning
	// released are the releases Unlock made in line (InstantReleaser), to
	// record as release batches.
	released []inlineRelease
	// recordQueue has the scheduler's records for the recorder goroutine
	// (see unlockAsync); recording: it runs; recorders: Close waits for it.
	recordQueue []records
	recording   bool
	recorders   sync.WaitGroup
}

var _ LockManager = (*Manager)(nil)

// keyState is what a Manager knows about one key it has holds, waiters or
// unconfirmed releases on. Guarded by the Manager's mutex.
type keyState struct {
	key     string
	holder  *hold           // the local hold, if any
	waiters []*waiter       // blocked Lock calls, FIFO; only the head talks to the backend
	pending []*release      // this Manager's unconfirmed releases of the key
	tries   int             // TryLock calls in progress
	settled []chan struct{} // closed when no release of the key is in flight
	// reports are the DeleteNotifier reports heard while calls of the key
	// were acquiring (see noteReport); reportSeq counts them.
	reports   []deleteReport
	reportSeq uint64
}

// deleteReport is a DeleteNotifier report: every lease of the key with a
// token below before ended. seq is its number in its key's reports.
type deleteReport struct{ seq, before uint64 }

// noteReport keeps a report for the attempts in flight: a hold made of a
// lease it covers is refreshed at once. Kept in seq order with before
// decreasing, as a report covers every earlier one with a lower or equal
// bound, for an attempt that began before either: so the attempts of
// the etcd backend, whose bounds (revisions) grow, keep one.
func (ks *keyState) noteReport(before uint64) {
	ks.reportSeq++
	i := len(ks.reports)
	for i > 0 && ks.reports[i-1].before <= before {
		i--
	}
	ks.reports = append(ks.reports[:i], deleteReport{ks.reportSeq, before})
}

// endedSince is the highest bound of the reports heard after the first
// seq: every lease of the key with a smaller token ended after an attempt
// that began when seq reports had been heard. 0 when none was heard.
func (ks *keyState) endedSince(seq uint64) uint64 {
	for _, r := range ks.reports {
		if r.seq > seq {
			return r.before
		}
	}
	return 0
}

// acquiring reports whether a call may have an attempt of the key in
// flight: a TryLock, or a Lock call queued for it (only the head of the
// queue attempts, but the others may soon).
func (ks *keyState) acquiring() bool { return ks.tries > 0 || len(ks.waiters) > 0 }

// waiter is a blocked Lock call's place in its key's queue.
type waiter struct {
	wake chan struct{} // cap 1; nil until the waiter first blocks
	// turnWait is set while the waiter waits for its turn (head of the
	// queue, no local holder, none of our releases of the key in flight),
	// rather than for a retry: only then does a release that failed, and
	// waits for its own retry, concern it.
	turnWait bool
}

// releasing reports whether a worker is releasing one of the Manager's leases
// of the key right now.
func (ks *keyState) releasing() bool {
	for _, r := range ks.pending {
		if r.inflight {
			return true
		}
	}
	return false
}

// ensureWake allocates the wake channel, with the Manager's mutex held,
// before the waiter first blocks: values that never wait never pay for it.
func (w *waiter) ensureWake() {
	if w.wake == nil {
		w.wake = make(chan struct{}, 1)
	}
}

func (ks *keyState) wakeHead() {
	if len(ks.waiters) > 0 {
		select {
		case ks.waiters[0].wake <- struct{}{}:
		default:
		}
	}
}

func (ks *keyState) removeWaiter(w *waiter) { ks.waiters = removeItem(ks.waiters, w) }

func (ks *keyState) removePending(r *release) { ks.pending = removeItem(ks.pending, r) }

// removeItem deletes the first x from s, keeping order.
func removeItem[T comparable](s []T, x T) []T {
	if i := slices.Index(s, x); i >= 0 {
		return slices.Delete(s, i, i+1)
	}
	return s
}

// NewManager returns a Manager that stores leases in b. Options that are not
// valid, and a nil b, surface as errors from every Lock and TryLock call.
func NewManager(b Backend, opts ...ManagerOption) *Manager {
	var o managerOptions
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if o.workers < 1 {
		o.workers = 8
	}
	m := &Manager{
		backend:     b,
		namespace:   o.namespace,
		defaults:    o.lockDefaults,
		log:         o.logger,
		ownerPrefix: newOwnerPrefix(),
		workerLimit: o.workers,
		done:        make(chan struct{}),
		stop:        make(chan struct{}),
		stopped:     make(chan struct{}),
		closeDone:   make(chan struct{}),
		wake:        make(chan struct{}, 1),
		keys:        make(map[string]*keyState),
	}
	m.bg, m.cancelBg = context.WithCancel(context.Background())
	m.slots = make(chan struct{}, o.workers)
	if b == nil {
		m.initErr = ErrNilBackend
		m.backendName = "none"
	} else {
		m.backendName = backendName(b)
		_, m.reportsContention = b.(ContentionReporter)
		m.relocker, _ = b.(Relocker)
		if ir, ok := b.(InstantReleaser); ok && sameBackend(ir.InstantBackend(), b) {
			m.instant = ir // not a wrapper's promoted method (see InstantReleaser)
		}
		m.queue, _ = b.(WaiterQueue)
		m.roundTrips, _ = b.(RoundTripNotifier)
		m.afterRoundTripFunc = m.afterRoundTrip
		if dn, ok := b.(DeleteNotifier); ok {
			m.stopDeletes = dn.NotifyDeletes(m.keyDeleted)
		}
	}
	m.obs = ctxlockotel.New(m.backendName, ctxlockotel.WithTracerProvider(o.tracerProvider), ctxlockotel.WithMeterProvider(o.meterProvider))
	return m
}

// sameBackend reports whether a and b are the same Backend: false, not a
// panic, for values of a type that cannot be compared.
func sameBackend(a, b Backend) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a == b
}

func newOwnerPrefix() string {
	var b [8]byte
	_, _ = cryptorand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:]) + ":"
}

// waiterSeq numbers the waiter ids of every Manager in the process (see
// newWaiter).
var waiterSeq atomic.Uint64

// newWaiter returns a waiter id (AcquireRequest.Waiter) for a Lock call
// starting now: the wall clock in 16 hex digits, a process-wide sequence
// number in 12, then a unique owner id, so that waiter ids sort by the time
// their calls started, across processes as far as their clocks agree, and
// in call order within the process for calls at the same instant of its
// clock (a coarse clock, fake time), whichever Manager made them.
func (m *Manager) newWaiter() string {
	const hexDigits = "0123456789abcdef"
	var buf [80]byte
	b := buf[:30]
	for i, t := 15, uint64(time.Now().UnixNano()); i >= 0; i, t = i-1, t>>4 {
		b[i] = hexDigits[t&15]
	}
	b[16] = '.'
	// 48 bits: wraps after 2^48 calls, by which time the clock has moved.
	for i, n := 28, waiterSeq.Add(1); i >= 17; i, n = i-1, n>>4 {
		b[i] = hexDigits[n&15]
	}
	b[29] = '.'
	b = append(b, m.ownerPrefix...)
	b = strconv.AppendUint(b, m.ownerSeq.Add(1), 36)
	return string(b)
}

// newOwner returns an owner id unique to one acquire attempt: the Manager's
// random prefix and a sequence number.
func (m *Manager) newOwner() string {
	var buf [48]byte
	b := append(buf[:0], m.ownerPrefix...)
	b = strconv.AppendUint(b, m.ownerSeq.Add(1), 36)
	return string(b)
}

// NewLock returns a Lock for key with the Manager's default lock options,
// then opts, applied. It does no I/O: an invalid key or option is reported by
// Lock and TryLock.
func (m *Manager) NewLock(key string, opts ...LockOption) Lock {
	o := DefaultLockOptions()
	o.Apply(m.defaults...)
	o.Apply(opts...)
	l := &lockValue{
		m:       m,
		key:     key,
		fullKey: m.namespace + key,
		opts:    *o,
	}
	l.drift = o.driftAllowance()
	if !o.NoRefresh {
		l.interval = o.refreshInterval()
	}
	switch {
	case m.initErr != nil:
		l.invalid = fmt.Errorf("ctxlock: lock %q: %w", key, m.initErr)
	case m.backend == nil: // the zero Manager, not made by NewManager
		l.invalid = fmt.Errorf("ctxlock: lock %q: %w (a zero Manager: use NewManager)", key, ErrNilBackend)
	case key == "":
		l.invalid = fmt.Errorf("%w: empty key", ErrInvalidKey)
	case len(key) > MaxKeyLength:
		l.invalid = fmt.Errorf("%w: key of %d bytes exceeds %d", ErrInvalidKey, len(key), MaxKeyLength)
	default:
		if err := o.Validate(); err != nil {
			l.invalid = fmt.Errorf("ctxlock: lock %q: %w", key, err)
		}
	}
	return l
}

// keyOfLocked returns the state of l's key, creating it. When the key has
// no state now, it takes back the idle state that l's last hold had, if
// any, instead of making one: a Lock/Unlock loop on an in-process store
// (whose in-line releases leave the key idle at every Unlock) then makes no
// garbage. The state is the key's own, as if it had never been forgotten.
func (m *Manager) keyOfLocked(l *lockValue) *keyState {
	if ks := m.keys[l.fullKey]; ks != nil {
		return ks
	}
	var ks *keyState
	if l.cur != nil && l.cur.keyst.key == l.fullKey && l.cur.keyst.idle() {
		ks = l.cur.keyst
	} else {
		ks = &keyState{key: l.fullKey}
	}
	m.keys[ks.key] = ks
	return ks
}

// idle reports that nothing refers to ks: it may be forgotten.
func (ks *keyState) idle() bool {
	return ks.holder == nil && len(ks.waiters) == 0 && len(ks.pending) == 0 && ks.tries == 0
}

// releaseKeyLocked forgets ks once nothing refers to it.
func (m *Manager) releaseKeyLocked(ks *keyState) {
	if ks.idle() {
		delete(m.keys, ks.key)
	}
}

func (m *Manager) acquire(ctx context.Context, l *lockValue, try bool, rec *ctxlockotel.Acquire) (*hold, error) {
	h, outcome, err := m.acquireLoop(ctx, l, try, rec)
	var token uint64
	recorded := false
	if h != nil {
		token = h.lease.Token
		// Should the tracer or meter panic in End, the caller never gets
		// the hold and cannot unlock it: it is unlocked here, else it
		// would be refreshed, and the key held, until Close.
		defer func() {
			if !recorded {
				m.mu.Lock()
				if h.ended {
					m.unlock()
				} else {
					m.unlockLocked(h)
				}
			}
		}()
	}
	sc := rec.End(outcome, token, err)
	if h != nil {
		m.mu.Lock()
		if sc.IsValid() {
			span := new(trace.SpanContext) // only when tracing: keeps holds small otherwise
			*span = sc
			h.span = span
		}
		h.announced = true
		if h.ended && (m.obs.Enabled() || h.lock.opts.Tracer != nil) {
			// It ended before End recorded it (ctxlock.held +1): its end
			// is recorded now, after, and as a child of the acquire span.
			m.endedHolds = append(m.endedHolds, h.endedLocked(time.Now()))
		}
		m.unlock() // should this record panic, the hold is unlocked too
	}
	recorded = true
	return h, err
}

// acquireLoop is the body of Lock and TryLock. Lock calls queue per key; only
// the queue's head makes backend attempts, so one process sends one attempt per
// wake-up however many goroutines wait.
func (m *Manager) acquireLoop(ctx context.Context, l *lockValue, try bool, rec *ctxlockotel.Acquire) (*hold, string, error) {
	var (
		waiter    string // this call's id in a WaiterQueue backend's queue
		watchCh   <-chan struct{}
		turns     <-chan Handoff // watchCh's stand-in for a waiter
		stopWatch func()
	)
	if !try && m.queue != nil {
		waiter = m.newWaiter()
		if l.queuedLast.Load() {
			// This value had to queue for the key last time: listen before
			// the first attempt, so that no hand-off can slip past.
			turns, stopWatch = m.queue.WatchWaiter(l.fullKey, waiter)
			if stopWatch == nil {
				stopWatch = func() {}
			}
		}
	}
	m.mu.Lock()
	if m.closed {
		m.unlock()
		if stopWatch != nil {
			stopWatch()
		}
		return nil, ctxlockotel.OutcomeClosed, fmt.Errorf("ctxlock: lock %q: %w", l.key, ErrClosed)
	}
	ks := m.keyOfLocked(l)
	w := &l.waiter
	if try {
		if ks.holder != nil {
			m.unlock()
			rec.Attempt(true)
			return nil, ctxlockotel.OutcomeHeld, nil
		}
		ks.tries++
	} else {
		select { // a wake-up left from an earlier call of this value is stale
		case <-w.wake: // (a nil channel, until the value first had to wait)
		default:
		}
		ks.waiters = append(ks.waiters, w)
	}
	// leave must be called with m.mu held on every way out.
	left := false
	leave := func() {
		if left {
			return
		}
		left = true
		if try {
			ks.tries--
		} else {
			wasHead := len(ks.waiters) > 0 && ks.waiters[0] == w
			ks.removeWaiter(w)
			if wasHead {
				ks.wakeHead()
			}
		}
		if !ks.acquiring() {
			ks.reports = nil // no attempt is left to need them
		}
		m.releaseKeyLocked(ks)
	}
	var (
		backoff   = l.opts.RetryDelay
		contended bool // an attempt of this call found the key held
		lastErr   error
		queued    bool // an attempt with waiter was refused: we are in the queue
		sent      bool // an attempt with waiter reached the backend, or may have
		acquired  bool
		made      *hold // the hold acquired, once it is made
		// counted: this call is in m.attempts, from its first backend
		// attempt until it has cleaned up after its last (released what
		// it took as Close began, left the waiter queue).
		counted bool
		// The start of the latest attempt the backend refused (or yielded
		// in), and the highest fencing counter a refusal reported: a grant
		// (Handoff) came later, so its lease lasts at least TTL from
		// refusedAt, unless its token shows it is stale.
		refusedAt    time.Time
		refusedFence uint64
		// firstSeq is the number of deletion reports of the key heard
		// before the call's first attempt: a grant may be of a lease any
		// later one covers.
		firstSeq uint64
		// stray is the latest lease granted to our waiter that we did not
		// adopt (see newHoldLocked): released, retried, when the call
		// fails, as by then nothing can adopt it.
		stray Lease
		// taken is a lease just granted while the user's recorders run,
		// before it is held: given back should one panic.
		taken Lease
	)
	// uncount ends counted (m.mu held); a Close waiting for it goes on.
	uncount := func() {
		if counted {
			counted = false
			m.attempts--
			m.settleLocked()
		}
	}
	defer func() {
		if waiter != "" {
			l.queuedLast.Store(queued)
		}
		if stopWatch != nil {
			stopWatch()
		}
		if sent && !acquired {
			// Give our place (or a key granted to us) up, or the key would
			// wait for us until the backend drops a waiter that stopped
			// retrying (or the grant's TTL ends).
			m.leaveLater(ctx, l.fullKey, waiter, l.opts.AcquireTimeout)
		}
		if counted {
			m.mu.Lock()
			uncount()
			m.unlock()
		}
	}()
	// returned: the call returns, rather than unwinding from a panic.
	returned := false
	cleanup := func() {
		if stray.Owner != "" {
			m.giveBackLocked(ks, stray, time.Now().Add(l.opts.TTL+l.drift))
			stray = Lease{}
		}
		if taken.Owner != "" {
			m.giveBackLocked(ks, taken, time.Now().Add(l.opts.TTL+l.drift))
			taken = Lease{}
		}
		leave()
		if !sent {
			uncount() // else after leaving the waiter queue
		}
	}
	fail := func(outcome string, err error) (*hold, string, error) {
		cleanup()
		m.unlock()
		returned = true
		return nil, outcome, err
	}
	// The user's tracer, meter and logger run with m.mu released, in
	// rec.Attempt, rec.Queued and the records of unlock, often with the
	// call half way: should one panic, the call leaves the key's queue (and
	// gives back what it took), and frees its Lock value, as a failing call
	// does, before the panic goes on.
	defer func() {
		if returned {
			return
		}
		if acquired {
			// The hold was made, but recording panicked before the call
			// could return it: nobody could unlock it, and it would be
			// refreshed until Close.
			m.mu.Lock()
			if !made.ended {
				m.unlockLocked(made)
			} else {
				m.unlock()
			}
			return
		}
		m.mu.Lock()
		w.turnWait = false
		cleanup() // lockValue.acquire frees the Lock value
		m.unlock()
	}()
	canceled := func() (*hold, string, error) {
		return fail(ctxlockotel.OutcomeCanceled, fmt.Errorf("ctxlock: lock %q: %w", l.key, waitErr(ctx, lastErr)))
	}
	closed := func() (*hold, string, error) {
		return fail(ctxlockotel.OutcomeClosed, fmt.Errorf("ctxlock: lock %q: %w", l.key, ErrClosed))
	}

	for first := true; ; first = false {
		// A TryLock waits only for our own releases of the key in flight:
		// the key is ours to free, so it is not "held by someone else".
		for try && ks.releasing() {
			settled := make(chan struct{})
			ks.settled = append(ks.settled, settled)
			m.unlock()
			select {
			case <-settled:
			case <-ctx.Done():
				m.mu.Lock()
				return canceled()
			case <-m.done:
				m.mu.Lock()
				return closed()
			}
			m.mu.Lock()
		}
		// Wait for our turn: head of the queue, no local holder, and none of
		// our own releases of the key in flight (its outcome decides whether
		// we should yield, and the key is ours to free anyway).
		for !try && (ks.waiters[0] != w || ks.holder != nil || ks.releasing()) {
			w.ensureWake()
			w.turnWait = true
			// Waiting only for our own release in flight is not contention
			// (nobody else holds the key; a TryLock does not count it either).
			behind := ks.waiters[0] != w || ks.holder != nil
			m.unlock()
			// Recorded with the mutex released (see unlock); should the
			// tracer or meter panic, the call leaves the key's queue first
			// (see the deferred cleanup above).
			if behind {
				rec.Queued()
			}
			select {
			case <-w.wake:
			case <-ctx.Done():
				m.mu.Lock()
				w.turnWait = false
				return canceled()
			case <-m.done:
				m.mu.Lock()
				w.turnWait = false
				return closed()
			}
			m.mu.Lock()
			w.turnWait = false
		}
		if m.closed {
			return closed()
		}
		// Yield once if this value's last hold was wanted by other owners.
		polite := first && !try && l.contended
		l.contended = false
		// Our own unconfirmed releases of this key would only make us wait:
		// perform them now, in line, before the attempt (unless a TryLock
		// would jump a queued Lock that way).
		var stolen [4]*release
		n := 0
		if !try || len(ks.waiters) == 0 {
			n = m.takeIdlePendingLocked(ks, stolen[:])
		}
		// One own release of a key we take again at once: with a Relocker
		// backend, release and acquire share one round trip.
		var relock *release
		if n == 1 && !try && !polite && m.relocker != nil {
			relock, n = stolen[0], 0
		}
		// The deletion reports heard so far predate the attempt's lease.
		seq := ks.reportSeq
		if first {
			firstSeq = seq
		}
		if !counted {
			counted = true
			m.attempts++
		}
		m.unlock()
		yield := polite
		if n > 0 && m.releaseInline(ctx, stolen[:n]) && !try {
			yield = true
		}
		drainOwnWake := n > 0 || relock != nil

		var (
			held      bool
			remaining time.Duration
			// heldHere: the attempt was answered, and recorded, as free,
			// but the key has a local hold: the call is contended all the
			// same (recorded once the mutex is released).
			heldHere bool
		)
		if !yield {
			owner := m.newOwner()
			req := AcquireRequest{
				Key: l.fullKey, Owner: owner, TTL: l.opts.TTL,
				Timeout: l.opts.AcquireTimeout, Metadata: l.opts.Metadata,
				Waiter: waiter,
			}
			t0 := time.Now()
			firstSent := !sent // no earlier attempt can have queued our waiter
			sent = sent || waiter != ""
			var (
				lease  Lease
				err    error
				behind bool // a Relock queued our waiter (yielding, or refused)
			)
			if relock != nil {
				var wanted bool
				lease, wanted, behind, err = m.relocker.Relock(ctx, relock.lease, req)
				yield = wanted && err == nil
				if yield && waiter != "" {
					// A waiter queue backend queued us behind the others
					// (and will tell us our turn), or gave the key up to
					// owners that do not queue (and will tell us nothing).
					queued = behind
					if behind && firstSent {
						// A yield reports no fencing counter, so it cannot
						// tell a later grant from a stale one: it dates
						// our grants only if it is the call's first
						// attempt (any grant came after it). Else the
						// refusals, which report one, date them, or, if
						// none did (a refusal's answer was lost), a grant
						// is taken for a hint, and the next attempt gets
						// it, renewed.
						refusedAt = t0
					}
				}
				releaseErr := err // the release went through unless the call failed
				if err == nil || errors.Is(err, ErrHeld) {
					releaseErr = nil
				}
				m.mu.Lock()
				m.completeReleaseLocked(relock, releaseErr, false)
				if err == nil {
					// Should recording panic, cleanup gives it back.
					taken = lease
				}
				m.unlock()
				taken = Lease{}
			} else {
				lease, err = m.backend.Acquire(ctx, req)
			}
			t1 := time.Now()
			m.observeRTT(t1.Sub(t0))
			if !yield {
				held = errors.Is(err, ErrHeld)
				rec.Attempt(held)
				if held {
					contended = true
					queued = queued || (waiter != "" && (relock == nil || behind))
				}
			}

			m.mu.Lock()
			if m.closed {
				if !held && !yield {
					// Taken, or maybe taken, as Close began: give it back
					// before Close returns (and its caller closes the
					// backend). A grant to our waiter has an owner of its
					// own.
					rel := Lease{Key: l.fullKey, Owner: owner}
					if err == nil && lease.Key == l.fullKey && waiter != "" && lease.Owner == GrantOwner(waiter, lease.Token) {
						rel = lease
					}
					m.giveBackLocked(ks, rel, t1.Add(l.opts.TTL+l.opts.driftAllowance()))
				}
				return closed()
			}
			if drainOwnWake {
				// Our own release's completion woke us, the key's local head:
				// that news is ours already.
				select {
				case <-w.wake:
				default:
				}
			}
			switch {
			case yield:
				// Released; the backend kept the key for the owners waiting.
			case err == nil && (lease.Key != l.fullKey || (lease.Owner != owner && (waiter == "" || lease.Owner != GrantOwner(waiter, lease.Token)))):
				err = fmt.Errorf("ctxlock: backend %s granted a lease for %q/%q when asked for %q/%q",
					m.backendName, lease.Key, lease.Owner, l.fullKey, owner)
				m.queueReleaseLocked(ks, &release{lease: Lease{Key: l.fullKey, Owner: owner}, lapseAt: t0.Add(2 * l.opts.TTL)}, time.Now())
				return fail(ctxlockotel.OutcomeError, err)
			case err == nil && ks.holder != nil:
				// The backend granted a key held here: the local hold's
				// lease ended on the server early (an operator deleted the
				// key, or the server revoked a live lease, etcd-io/etcd#15247)
				// and this attempt, a TryLock's or one that began before the
				// hold was made, took the key meanwhile; or the backend is
				// broken. One hold per key: give this lease back, refresh
				// the local hold, which ends it if its lease is the one gone,
				// and count the attempt as refused.
				m.queueReleaseLocked(ks, &release{lease: lease, lapseAt: t1.Add(l.opts.TTL + l.opts.driftAllowance())}, t1)
				m.refreshNowLocked(ks.holder)
				held = true
				heldHere = true
				refusedAt = t0
				// A hand-off of this grant, if one is still on its way to our
				// waiter, is stale now.
				refusedFence = max(refusedFence, lease.Token)
			case err == nil:
				if h := m.newHoldLocked(l, ks, lease, t0, t1, l.opts.TTL, lease.Owner != owner, ks.endedSince(seq)); h != nil {
					if !m.reportsContention {
						l.contended = contended
					}
					leave()
					uncount()
					acquired, made = true, h
					m.unlock()
					returned = true
					return h, ctxlockotel.OutcomeAcquired, nil
				}
				if lease.Owner != owner {
					stray = lease
				}
				// A backend too slow for the TTL: transient, like a timeout.
				lastErr = fmt.Errorf("%w: acquire took %v, longer than the validity window of TTL %v", ErrUnavailable, t1.Sub(t0), l.opts.TTL)
			case held:
				var he *HeldError
				if errors.As(err, &he) {
					remaining = he.Remaining
					refusedFence = max(refusedFence, he.Fence)
				}
				refusedAt = t0
			case ctx.Err() != nil:
				// The attempt ended with the caller's context: its outcome is unknown.
				m.queueReleaseLocked(ks, l.unknownAttemptRelease(owner, t1), t1)
				return canceled()
			case isTransient(err):
				lastErr = Unavailable(err)
				m.queueReleaseLocked(ks, l.unknownAttemptRelease(owner, t1), t1)
			default:
				return fail(ctxlockotel.OutcomeError, fmt.Errorf("ctxlock: lock %q: %w", l.key, err))
			}
		} else {
			// The release of this key just woke other owners' waiters (the
			// backend said so, or, for backends that cannot tell, this value's
			// last acquire found the key contended). Let them have the key
			// rather than re-taking it at once, which would starve every other
			// process: wait a backoff (or a notification) first.
			m.mu.Lock()
		}
		if try {
			if held {
				h, outcome, err := fail(ctxlockotel.OutcomeHeld, nil)
				if heldHere {
					rec.Queued()
				}
				return h, outcome, err
			}
			return fail(ctxlockotel.OutcomeError, fmt.Errorf("ctxlock: trylock %q: %w", l.key, lastErr))
		}
		w.ensureWake()
		m.unlock()
		if heldHere {
			rec.Queued()
		}

		// Listen for releases once the key was found held (or we yield to
		// others), not after a failed attempt: subscribing to a backend that
		// cannot be reached may take a while, and polling is all we can do
		// then anyway.
		if stopWatch == nil && (contended || yield) {
			if waiter != "" {
				turns, stopWatch = m.queue.WatchWaiter(l.fullKey, waiter)
			} else {
				watchCh, stopWatch = m.backend.Watch(l.fullKey)
			}
			if stopWatch == nil {
				stopWatch = func() {}
			}
			if (queued && turns != nil) || (held && watchCh != nil) {
				// A release between our place in the queue (or the
				// attempt that found the key held) and the subscription
				// was told to no one: look once more, now that we will
				// hear when our turn comes (or the key is released).
				m.mu.Lock()
				continue
			}
		}
		if queued && turns != nil {
			// Queued, and told when our turn comes: retry only to keep our
			// place (and to notice a lease that lapses unreleased), every
			// MaxRetryDelay, however long the lock's retry delay: the
			// backend drops a waiter silent for longer than its keep.
			backoff = MaxRetryDelay
		}
		delay := jitter(backoff)
		if remaining > 0 && remaining < delay {
			delay = remaining
		}
		wake, watch, turn := w.wake, watchCh, turns
		if yield && !(queued && turns != nil) {
			// A yield is a short plain delay: our own release's completion
			// and its notification would cut it short. (Queued behind the
			// owners we yield to, we simply wait to be told.)
			delay = m.yieldDelay(l.opts.RetryDelay)
			wake, watch, turn = nil, nil, nil
		}
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
			if !yield {
				backoff = doubled(backoff, max(MaxRetryDelay, l.opts.RetryDelay))
			}
		case _, ok := <-watch:
			if !ok { // a backend that closed its channel: poll instead of spinning
				watchCh = nil
				break
			}
			// Without a waiter queue every waiting process hears a release at
			// once, in the same order each time (the server's subscriber
			// order): a random pause of up to a round trip keeps the
			// first-notified from always winning.
			if d := m.rtt.Load(); d > 0 && waiter == "" {
				pause := time.NewTimer(time.Duration(rand.N(d)))
				select {
				case <-pause.C:
				case <-ctx.Done():
				case <-m.done:
				}
				pause.Stop()
			}
		case ho, ok := <-turn:
			if !ok {
				turns = nil
				break
			}
			if ho.Token == 0 || refusedAt.IsZero() || ho.Token <= refusedFence {
				break // a hint (or a stale grant): retry now
			}
			// The backend granted us the key: hold it without a round trip.
			timer.Stop()
			lease, t0, ttl := Lease{Key: l.fullKey, Owner: GrantOwner(waiter, ho.Token), Token: ho.Token}, refusedAt, min(ho.TTL, l.opts.TTL)
			if ttl <= 0 {
				ttl = l.opts.TTL
			}
			if ttl < l.opts.TTL && l.interval == 0 {
				// A short grant, and no refreshes to renew it: renew it now,
				// within one attempt's time (Close waits for this call).
				t1 := time.Now()
				ectx, cancel := context.WithTimeout(ctx, l.opts.AcquireTimeout)
				errs := m.backend.Extend(ectx, []Lease{lease}, l.opts.TTL)
				cancel()
				if err := resultAt(errs, 0, 1, m.backendName); err != nil {
					// Not released (see newHoldLocked): the next attempt
					// renews the grant if it is still ours.
					m.mu.Lock()
					stray = lease
					lastErr = err
					continue
				}
				t0, ttl = t1, l.opts.TTL
			}
			m.mu.Lock()
			if h, done := m.adoptGrantLocked(l, ks, lease, t0, ttl, ks.endedSince(firstSeq)); done {
				if h == nil {
					return closed()
				}
				leave()
				uncount()
				acquired, made = true, h
				m.unlock()
				returned = true
				return h, ctxlockotel.OutcomeAcquired, nil
			}
			stray = lease
			lastErr = fmt.Errorf("a granted lease lapsed before it was received")
			continue
		case <-wake:
		case <-ctx.Done():
			timer.Stop()
			m.mu.Lock()
			return canceled()
		case <-m.done:
			timer.Stop()
			m.mu.Lock()
			return closed()
		}
		timer.Stop()
		m.mu.Lock()
	}
}

// adoptGrantLocked makes lease, which a WaiterQueue backend granted with ttl
// to the waiting Lock call of l at some instant after t0, the hold of l. done is
// false when the lease's validity has passed already, or l's key is held
// here (a broken backend): the lease is left to the call's next attempt
// (see newHoldLocked); h is nil with done true when the Manager is closed
// (the lease is given back, see giveBackLocked).
func (m *Manager) adoptGrantLocked(l *lockValue, ks *keyState, lease Lease, t0 time.Time, ttl time.Duration, endedBefore uint64) (h *hold, done bool) {
	now := time.Now()
	if m.closed {
		// An attempt of the call may have renewed the grant to l's TTL.
		m.giveBackLocked(ks, lease, now.Add(l.opts.TTL+l.drift))
		return nil, true
	}
	if ks.holder != nil {
		return nil, false // a broken backend granted a key held here
	}
	h = m.newHoldLocked(l, ks, lease, t0, now, ttl, true, endedBefore)
	return h, h != nil
}

// observeRTT folds one backend round trip into the moving average.
func (m *Manager) observeRTT(d time.Duration) {
	old := m.rtt.Load()
	m.rtt.Store(old + (int64(d)-old)/8)
}

// yieldDelay is how long a releaser waits before taking the key again when
// others wanted it: a few round trips, time enough for a woken waiter
// elsewhere to try, at least a tenth of the retry delay (a busy machine
// schedules waiters late), never more than the retry delay.
func (m *Manager) yieldDelay(retry time.Duration) time.Duration {
	d := jitter(4 * time.Duration(m.rtt.Load()))
	return min(max(d, retry/10), retry)
}

// jitter returns a duration in [d/2, d].
// doubled returns 2d, or limit when that is more (without overflowing: a
// huge retry delay must not wrap around to none).
func doubled(d, limit time.Duration) time.Duration {
	if d > limit/2 {
		return limit
	}
	return 2 * d
}

func jitter(d time.Duration) time.Duration {
	if d < 2 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// waitErr is the error of a wait that ctx ended: it matches ctx.Err(), says
// the cause when there is one, and joins in the last backend fault.
func waitErr(ctx context.Context, last error) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); cause != nil && cause != err {
		err = fmt.Errorf("%w: %w", err, cause)
	}
	if last != nil {
		return errors.Join(err, fmt.Errorf("last backend fault: %w", last))
	}
	return err
}

// newHoldLocked registers a lease granted for ttl at or after t0 as the hold
// of l, or returns nil when its validity window has already passed. The
// lease of an attempt is then released. A lease a WaiterQueue granted to
// the call's waiter (grant) is not: its owner is the waiter's, not fresh,
// so a release of it still on its way could land after the call's next
// attempt has found the grant still there and adopted it (renewed), and
// delete the hold's lease; the call leaves the grant to that attempt, or
// to its Leave. A ttl shorter than l's (a grant) shortens the first
// validity window and brings the first refresh forward.
func (m *Manager) newHoldLocked(l *lockValue, ks *keyState, lease Lease, t0, now time.Time, ttl time.Duration, grant bool, endedBefore uint64) *hold {
	h := &hold{
		lock:    l,
		keyst:   ks,
		lease:   lease,
		start:   now,
		heapIdx: -1,
	}
	h.validUntil = h.validity(t0)
	h.refreshAt = t0.Add(l.interval)
	if ttl < l.opts.TTL {
		// The grant's own validity (its drift allowance from its own TTL,
		// as §3 of the design has it: the lock's, from a TTL far longer,
		// could exceed the grant), and a first refresh well within it.
		h.validUntil = t0.Add(ttl - (time.Duration(float64(ttl)*l.opts.DriftFactor) + validityMargin))
		h.refreshAt = t0.Add(min(l.interval, ttl/3, h.validUntil.Sub(t0)/2))
	}
	if !h.validUntil.After(now) {
		if !grant {
			h.rel = release{lease: lease, lapseAt: h.lapse(now)}
			m.queueReleaseLocked(ks, &h.rel, now)
		}
		return nil
	}
	h.expired = make(chan struct{})
	ks.holder = h
	l.cur = h
	m.holds.push(h)
	if lease.Token < endedBefore {
		// Reported ended while the attempt was on its way.
		m.refreshNowLocked(h)
	}
	if w := l.interval / 4; w > m.maxWindow {
		m.maxWindow = w
	}
	m.nudgeLocked(h.at())
	return h
}

// closingRepeat is the againMs of a repeat that Close sent once more: no
// repeat follows it.
const closingRepeat = -1

// unknownAttemptRelease is the release of the lease that an attempt of
// unknown outcome by owner, given up at t1, may have taken. Once confirmed it
// is repeated (see repeatLocked): the attempt's request may still be on its
// way to the backend, and take the key after the release found nothing.
func (l *lockValue) unknownAttemptRelease(owner string, t1 time.Time) *release {
	return &release{
		lease:   Lease{Key: l.fullKey, Owner: owner},
		lapseAt: t1.Add(l.opts.TTL + l.opts.driftAllowance()),
		againMs: int32(min(max(l.opts.AcquireTimeout.Milliseconds(), 1), math.MaxInt32/2)),
	}
}

// repeatLocked queues r, a confirmed release of an attempt of unknown
// outcome (r.againMs > 0), to be sent again r.againMs later, and doubles
// r.againMs; the last repeat goes at r.lapseAt, when the attempt's lease
// would have lapsed had it been taken at once. A request of the attempt that
// reaches the backend late (on a connection its client has dropped) takes
// the key for an owner nobody else releases: the next repeat frees it, so
// that it blocks the key about as long as it was late, not a whole TTL.
// Owners are unique per attempt: a repeat never releases another hold.
//
// Repeats are best effort: they are not pending releases (Health, the
// pending-releases metric), no Lock call waits for them or takes them, and
// Close sends each queued one once more, at once, waits for that as for
// pending releases (within its ctx), and schedules no further repeat: a
// straggler that landed before Close then does not hold its key a TTL
// after the process is gone. Their outcome only matters for scheduling the
// next.
func (m *Manager) repeatLocked(r *release) {
	now := time.Now()
	if m.closed || !now.Before(r.lapseAt) {
		return
	}
	r.repeated = true
	r.retryAt = now.Add(time.Duration(r.againMs) * time.Millisecond)
	if r.retryAt.After(r.lapseAt) {
		r.retryAt = r.lapseAt
	}
	if r.againMs < math.MaxInt32/2 {
		r.againMs *= 2
	}
	m.releases.push(r)
	r.queued = true
	m.nudgeLocked(r.retryAt)
}

// queueReleaseLocked hands r to the scheduler, to be released now and retried
// until confirmed or lapsed.
func (m *Manager) queueReleaseLocked(ks *keyState, r *release, now time.Time) {
	r.keyst = ks
	r.retryAt = now
	r.heapIdx = -1
	ks.pending = append(ks.pending, r)
	m.releases.push(r)
	r.queued = true
	if !m.releasesAbandoned {
		m.pending++
		m.pendingDelta++
	}
	m.nudgeReleaseLocked(r.retryAt)
}

// nudgeReleaseLocked makes sure the scheduler wakes for a release due at,
// but, while the backend has a round trip in flight, only once that round
// trip has been answered: a Lock of the same key usually takes the release
// before that, to send it with its acquire (see RoundTripNotifier).
func (m *Manager) nudgeReleaseLocked(at time.Time) {
	if m.roundTrips != nil && m.running && !m.closed && (m.timerAt.IsZero() || at.Before(m.timerAt)) {
		if m.afterRoundTripSet.Load() {
			return
		}
		// Set before the call: afterRoundTrip may run before it returns.
		m.afterRoundTripSet.Store(true)
		if m.roundTrips.AfterRoundTrip(m.afterRoundTripFunc) {
			return
		}
		m.afterRoundTripSet.Store(false)
	}
	m.nudgeLocked(at)
}

// afterRoundTrip is the backend's call after the round trip that releases'
// wake-ups waited for: the scheduler wakes if one of them is still queued.
// Usually none is, and the mutex is not taken.
func (m *Manager) afterRoundTrip() {
	m.afterRoundTripSet.Store(false)
	// A release queued before the Store above is counted below (both are
	// sequentially consistent); one queued after it sets up a new call.
	if m.releases.size.Load() == 0 {
		return
	}
	m.mu.Lock()
	defer m.unlock()
	if m.releases.len() > 0 {
		m.nudgeLocked(m.releases.peek().at())
	}
}

// takeIdlePendingLocked takes up to len(dst) of ks's releases that no worker
// is performing (and that are past their notBefore), for the caller to
// perform in line.
func (m *Manager) takeIdlePendingLocked(ks *keyState, dst []*release) int {
	n := 0
	var now time.Time
	for _, r := range ks.pending {
		if n == len(dst) {
			break
		}
		if r.graced {
			if now.IsZero() {
				now = time.Now()
			}
			if r.notBefore().After(now) {
				continue // an expired hold's grace: its key is not ours to take yet
			}
		}
		if r.queued {
			m.releases.remove(r)
			r.queued = false
			r.inflight = true
			dst[n] = r
			n++
		}
	}
	return n
}

// releaseInline performs releases in the caller's goroutine (a Lock call
// about to attempt the same key). It reports whether the backend said that
// another owner wanted the key (see ContentionReporter).
func (m *Manager) releaseInline(ctx context.Context, rs []*release) (contended bool) {
	var leases []Lease
	if len(rs) == 1 {
		// A one-lease batch viewed in place: no allocation on the re-lock path.
		leases = unsafe.Slice(&rs[0].lease, 1)
	} else {
		leases = make([]Lease, len(rs))
		for i, r := range rs {
			leases[i] = r.lease
		}
	}
	errs, wanted := m.release(ctx, leases)
	m.mu.Lock()
	for i, r := range rs {
		err := resultAt(errs, i, len(rs), m.backendName)
		contended = contended || (err == nil && i < len(wanted) && wanted[i])
		m.completeReleaseLocked(r, err, false)
	}
	m.unlock()
	return contended
}

// release releases leases, learning which were wanted by other owners when
// the backend can tell.
func (m *Manager) release(ctx context.Context, leases []Lease) (errs []error, wanted []bool) {
	if cr, ok := m.backend.(ContentionReporter); ok {
		return cr.ReleaseContended(ctx, leases)
	}
	return m.backend.Release(ctx, leases), nil
}

// giveBackLocked releases lease, taken by a Lock call that is not keeping
// it: like any release while the Manager is open, or while Close waits for
// releases to drain (then it is one of them: retried until confirmed or
// lapsing at lapseAt, and reported by Close when abandoned); once Close
// stopped waiting, with one bounded attempt in line, as nothing would send
// a queued release.
func (m *Manager) giveBackLocked(ks *keyState, lease Lease, lapseAt time.Time) {
	if !m.closed || m.draining {
		m.queueReleaseLocked(ks, &release{lease: lease, lapseAt: lapseAt}, time.Now())
		return
	}
	r := m.takeRecordsLocked() // recorded once lease is given back: they may panic
	m.mu.Unlock()
	m.releaseAfterClose(lease)
	m.record(r)
	m.mu.Lock()
}

// releaseAfterClose releases a lease granted after Close began, when the
// scheduler may be gone, in the caller's goroutine and with a bounded wait.
func (m *Manager) releaseAfterClose(lease Lease) {
	ctx, cancel := context.WithTimeout(context.Background(), afterCloseReleaseTimeout)
	defer cancel()
	m.backend.Release(ctx, []Lease{lease})
}

// resultAt returns errs[i], or an error when the backend answered a batch of
// n with a different number of results.
func resultAt(errs []error, i, n int, backend string) error {
	if errs == nil {
		return nil
	}
	if len(errs) != n {
		return Unavailable(fmt.Errorf("ctxlock: backend %s returned %d results for a batch of %d", backend, len(errs), n))
	}
	return errs[i]
}

// completeReleaseLocked records the outcome of one release attempt.
// wanted reports that another owner wanted the key: the released hold's
// Lock value then yields before its next attempt on the key.
func (m *Manager) completeReleaseLocked(r *release, err error, wanted bool) {
	r.inflight = false
	if r.repeated {
		if r.againMs == closingRepeat {
			m.closingRepeats--
			m.settleLocked()
			return
		}
		m.repeatLocked(r) // best effort: nothing waits for it
		return
	}
	if wanted && err == nil && r.lock != nil {
		r.lock.contended = true
	}
	ks := r.keyst
	retry := err != nil && isTransient(err) && time.Now().Before(r.lapseAt)
	if retry {
		now := time.Now()
		r.attempts++
		r.retryAt = now.Add(min(jitter(releaseRetryDelay<<min(r.attempts, 7)), r.lapseAt.Sub(now)))
		m.releases.push(r)
		r.queued = true
		m.nudgeLocked(r.retryAt)
	} else {
		if err != nil {
			m.warnLocked("ctxlock: release abandoned; the lease lapses at its TTL", "key", r.lease.Key, "error", err)
		}
		ks.removePending(r)
		if !m.releasesAbandoned {
			m.pending--
			m.pendingDelta--
		}
		m.settleLocked()
		if err == nil && r.againMs > 0 {
			m.repeatLocked(r)
		}
	}
	// Calls waiting for the key's releases to settle go on: a Lock at the
	// head of the queue, TryLocks. A head sleeping on its backoff is cut
	// short only by the release of a hold, which frees a key we held: a
	// release that failed and waits for its retry frees nothing, and one
	// of a failed attempt's lease (r.lock nil), which this head queued
	// itself, most likely neither — else a backend that fails acquires
	// fast would have it retry at once, again and again, whether such
	// releases fail or not. A head waiting for its turn goes on, the
	// release being no longer in flight.
	if (!retry && r.lock != nil) || (len(ks.waiters) > 0 && ks.waiters[0].turnWait) {
		ks.wakeHead()
	}
	if len(ks.settled) > 0 && !ks.releasing() {
		for _, ch := range ks.settled {
			close(ch)
		}
		ks.settled = nil
	}
	m.releaseKeyLocked(ks)
}

// settleLocked tells a Close waiting for releases and leaves that none is
// left.
func (m *Manager) settleLocked() {
	if m.pending == 0 && len(m.leaves) == 0 && m.attempts == 0 && m.closingRepeats == 0 && m.drained != nil {
		close(m.drained)
		m.drained = nil
	}
}

// maxLeavesInFlight bounds leaveLater's goroutines; past it, Lock calls
// that give up leave in line.
const maxLeavesInFlight = 64

// leaveLater takes waiter, a Lock call that gave up, out of key's queue on
// the backend (WaiterQueue.Leave), bounded by timeout, in a goroutine of its
// own: the call returns when its context says, not a round trip later (or a
// timeout later, when the backend is unreachable). Close waits for these
// goroutines as for releases (and cancels those still running when its
// context ends). Once Close has begun, or with maxLeavesInFlight running,
// the caller leaves in line: a call that Close woke returns ErrClosed, and
// no goroutine may start that Close would not wait for.
func (m *Manager) leaveLater(ctx context.Context, key, waiter string, timeout time.Duration) {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	m.mu.Lock()
	inline := m.closed || len(m.leaves) >= maxLeavesInFlight
	// Registered either way, so that a Close whose ctx ends cancels it.
	id := m.nextLeave
	m.nextLeave++
	if m.leaves == nil {
		m.leaves = make(map[uint64]context.CancelFunc)
	}
	m.leaves[id] = cancel
	m.unlock()
	leave := func() {
		_ = m.queue.Leave(lctx, key, waiter)
		cancel()
		m.mu.Lock()
		delete(m.leaves, id)
		m.settleLocked()
		m.unlock()
	}
	if inline {
		leave()
		return
	}
	go leave()
}

// nudgeLocked makes sure the scheduler wakes by at.
func (m *Manager) nudgeLocked(at time.Time) {
	if !m.running {
		if m.closed && m.stoppedClosed() {
			return
		}
		m.running = true
		go m.run()
	}
	if m.timerAt.IsZero() || at.Before(m.timerAt) {
		m.timerAt = at
		select {
		case m.wake <- struct{}{}:
		default:
		}
	}
}

func (m *Manager) stoppedClosed() bool {
	select {
	case <-m.stop:
		return true
	default:
		return false
	}
}

// Health reports the backend's conditions and the scheduler's: pending
// releases, holds whose latest refresh failed, refresh lag, a closed
// Manager. err is non-nil when the backend is unusable or the Manager is
// closed. A closed Manager answers at once (matching ErrClosed) without
// asking the backend. Health returns when ctx ends even if the backend has
// not answered (its check then ends in the background, bounded by the
// backend's own timeouts, and Close waits for it), with an error matching
// ctx's.
func (m *Manager) Health(ctx context.Context) ([]string, error) {
	if ctx == nil {
		return nil, ErrNilContext
	}
	if m.initErr != nil {
		return nil, m.initErr
	}
	if m.backend == nil {
		return nil, fmt.Errorf("ctxlock: health: %w (a zero Manager: use NewManager)", ErrNilBackend)
	}
	m.mu.Lock()
	closed := m.closed
	if !closed {
		m.checks.Add(1) // Done once the backend has answered
	}
	m.unlock()
	if closed {
		// Said at once, whatever the backend is doing: nothing of the
		// Manager is usable any more, and a frozen backend would make the
		// caller wait for its ctx to learn so.
		return []string{"manager closed"}, fmt.Errorf("ctxlock: health: %w", ErrClosed)
	}
	conds, err := m.backendHealth(ctx)
	now := time.Now()
	m.mu.Lock()
	defer m.unlock()
	if m.pending > 0 {
		conds = append(conds, fmt.Sprintf("pending releases: %d", m.pending))
	}
	if m.failingHolds > 0 {
		conds = append(conds, fmt.Sprintf("holds whose refresh is failing: %d", m.failingHolds))
	}
	if m.holds.len() > 0 {
		if lag := now.Sub(m.holds.peek().at()); lag > 100*time.Millisecond {
			conds = append(conds, fmt.Sprintf("refresh lag: %v", lag.Round(time.Millisecond)))
		}
	}
	if m.closed {
		conds = append(conds, "manager closed")
		if err == nil {
			err = ErrClosed
		}
	}
	return conds, err
}

// backendHealth is m.backend.Health(ctx), returning when ctx ends even if
// the backend does not: go-redis, say, honours a ctx's deadline but not its
// cancellation, and with no ReadTimeout a PING to a frozen server waits for
// ever. The backend's call then goes on in the background, bounded by the
// backend's own timeouts (or until the server answers), and Close waits for
// it. The caller has added one to m.checks; backendHealth marks it done
// when the backend's call returns.
func (m *Manager) backendHealth(ctx context.Context) ([]string, error) {
	if ctx.Done() == nil {
		defer m.checks.Done()
		return m.backend.Health(ctx) // nothing to return early on
	}
	type result struct {
		conds    []string
		err      error
		panicked any
	}
	ch := make(chan result, 1)
	go func() {
		var r result
		defer func() {
			// A panicking backend panics in the caller, as it would have
			// without this goroutine, if the caller is still there.
			if p := recover(); p != nil {
				r.panicked = p
			}
			ch <- r
			m.checks.Done()
		}()
		r.conds, r.err = m.backend.Health(ctx)
	}()
	answer := func(r result) ([]string, error) {
		if r.panicked != nil {
			panic(r.panicked)
		}
		return r.conds, r.err
	}
	select {
	case r := <-ch:
		return answer(r)
	case <-ctx.Done():
		select {
		case r := <-ch: // answered as ctx ended: the answer says more
			return answer(r)
		default:
		}
		return []string{fmt.Sprintf("backend %s: no answer before ctx ended", m.backendName)},
			fmt.Errorf("ctxlock: health: backend %s did not answer: %w", m.backendName, waitErr(ctx, nil))
	}
}

// Close ends every hold (their expiry channels close with ErrClosed), makes
// blocked and later Lock calls return ErrClosed, and waits until every
// pending release is confirmed and every Lock or TryLock call that has made
// a backend attempt has returned (they return ErrClosed at once, after
// leaving the backend's waiter queue; what an attempt in flight took is
// released like any pending release), or until ctx is done; then it stops
// the scheduler and its workers, waits for the backend checks of Health
// calls whose callers stopped waiting, and waits (whether or not ctx is
// done) for the tracer, meter and logger records the scheduler left to its
// recorder goroutine. When it returns, nothing the Manager started still
// uses the backend, unless ctx ended first, so the backend may be closed
// then. When ctx ends first, Close returns then even if workers or checks
// are still in backend calls (a frozen server): those calls end in the background,
// bounded by their own deadlines and the backend's timeouts, and Close's
// error says so.
//
// A release the backend does not confirm is retried until its lease lapses,
// so with a backend that is down Close waits up to the TTL for it: pass a
// ctx with a deadline to bound the wait (what is left then lapses on the
// backend on its own).
//
// The releases of attempts whose outcome was unknown (a request that may
// still reach the backend after its release) are repeated now and then
// until their lease would have lapsed; Close sends each such repeat once
// more, at once, and waits for it within ctx (without an error if ctx ends
// first: they are best effort), so that an attempt that took its key late,
// before Close, does not keep the key after the process is gone. An
// attempt that lands after that is still held until its TTL.
//
// Releases still pending when ctx ends are abandoned: those leases lapse at
// their TTL, and Close returns an error saying how many, and what else was
// left running (a Lock call still running then gives back what its attempt
// took itself, with one bounded try). Leaves still running then are
// cancelled (and end as the backend honours that, within the Lock's
// AcquireTimeout); the places they leave lapse on the backend. Calling
// Close again waits for the first Close and returns nil, or returns ctx's
// error if ctx ends first.
func (m *Manager) Close(ctx context.Context) error {
	if ctx == nil {
		return ErrNilContext
	}
	if m.done == nil {
		return nil // the zero Manager: it never started anything
	}
	first := false
	m.closeOnce.Do(func() { first = true })
	if !first {
		select {
		case <-m.closeDone:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	m.mu.Lock()
	m.closed = true
	m.draining = true
	close(m.done)
	now := time.Now()
	for _, ks := range m.keys {
		if ks.holder != nil {
			m.endHoldLocked(ks.holder, ErrClosed, nil)
		}
		// Releases in an expiry's grace go now, as live holds' do: the
		// caller is shutting the holders down, and the grace can be as long
		// as half the TTL.
		for _, r := range ks.pending {
			if r.graced && r.notBefore().After(now) {
				r.graced = false
				if r.queued {
					r.retryAt = now
					m.releases.fix(r)
					m.nudgeLocked(now)
				}
			}
		}
	}
	// Repeats of released attempts go once more, now, and Close waits for
	// them (see repeatLocked).
	var repeats []*release
	for _, r := range m.releases.items {
		if r.repeated && r.againMs != closingRepeat {
			repeats = append(repeats, r)
		}
	}
	for _, r := range repeats {
		r.againMs = closingRepeat
		r.retryAt = now
		m.releases.fix(r)
		m.closingRepeats++
	}
	if len(repeats) > 0 {
		m.nudgeLocked(now)
	}
	var drained chan struct{}
	if m.pending > 0 || len(m.leaves) > 0 || m.attempts > 0 || m.closingRepeats > 0 {
		drained = make(chan struct{})
		m.drained = drained
	}
	m.unlock()

	var err error
	if drained != nil {
		select {
		case <-drained:
		case <-ctx.Done():
			m.mu.Lock()
			m.draining = false
			n, l, a := m.pending, len(m.leaves), m.attempts
			// Leaves still running are cut short; they end as their backend
			// call honours the cancellation (within their timeout anyway).
			for _, cancel := range m.leaves {
				cancel()
			}
			m.unlock()
			if n == 0 && l == 0 && a == 0 {
				break // only best-effort repeats were left: abandoned, no error
			}
			err = fmt.Errorf("ctxlock: close: %d releases abandoned, their leases lapse at their TTL; %d waiter-queue leaves cut short; %d Lock calls not yet returned: %w", n, l, a, ctx.Err())
		}
	}
	m.mu.Lock()
	m.draining = false
	close(m.stop)
	running := m.running
	m.unlock()
	if running {
		<-m.stopped
	} else {
		close(m.stopped)
	}
	m.cancelBg()
	if m.stopDeletes != nil {
		m.stopDeletes()
	}
	// Workers in a backend call that ignores the cancellation (go-redis
	// honours a ctx's deadline, not its cancellation; a release's deadline
	// is releaseTimeout away) are waited for only until ctx ends: they then
	// finish in the background, bounded by their deadlines and the
	// backend's own timeouts. Their results change nothing any more (every
	// hold has ended; releases are abandoned below).
	// Health checks left running by callers who stopped waiting are
	// waited for alike.
	workersDone := make(chan struct{})
	go func() {
		_ = m.workers.Wait()
		m.checks.Wait()
		close(workersDone)
	}()
	select {
	case <-workersDone:
	case <-ctx.Done():
		select {
		case <-workersDone:
		default:
			left := fmt.Errorf("ctxlock: close: refreshes, releases or health checks still in flight on the backend, left to end within their own timeouts: %w", ctx.Err())
			if err == nil {
				err = left
			} else {
				err = errors.Join(err, left)
			}
		}
	}
	m.recorders.Wait()
	m.mu.Lock()
	// Releases still pending are abandoned (see err): with the scheduler
	// stopped nothing retries them, so they no longer count as pending
	// (Health, and the pending-releases metric), nor do releases that Lock
	// calls still running queue or complete.
	m.pendingDelta -= m.pending
	m.pending = 0
	m.releasesAbandoned = true
	m.unlock()
	close(m.closeDone)
	return err
}
