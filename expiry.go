package ctxlock

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/trace"

	ctxlockotel "github.com/ctxlock/ctxlock/otel"
)

// hold is one acquisition of a key by a Lock value: from the moment Lock
// returns until its expiry channel closes. All fields are guarded by the
// Manager's mutex; expired is closed exactly once, by endHoldLocked.
type hold struct {
	lock  *lockValue
	keyst *keyState
	lease Lease

	start      time.Time // when Lock returned it, for the hold duration
	validUntil time.Time // local validity deadline (monotonic)
	refreshAt  time.Time // next refresh due
	refreshErr error     // the last failed refresh, joined into ErrExpired

	// Small fields together, so that a hold fits a smaller size class.
	failures   int32 // consecutive failed refreshes, for backoff
	heapIdx    int32
	refreshing bool // an Extend for it is in flight
	recheck    bool // its key was reported deleted during that Extend: refresh again at once
	ended      bool
	unlocked   bool // ended by Unlock
	// announced: the acquire call has recorded the hold (ctxlock.held +1,
	// the acquire span). A hold that ends before that is recorded by the
	// acquire call, so that its end never comes first (see Manager.acquire).
	announced bool

	reason  error // ErrUnlocked, ErrLost, ErrExpired or ErrClosed, once ended
	cause   error // detail for reason, if any
	err     error // reason with detail, built by errLocked
	expired chan struct{}
	span    *trace.SpanContext // the acquire span, when tracing recorded one
	// cancelDo cancels the context of the Do call running under this hold,
	// if any: as the hold ends, so that fn never finds its context live
	// once Err, Token or the expiry channel say the hold is over.
	cancelDo context.CancelCauseFunc

	// rel is this hold's release, embedded to save an allocation per Unlock.
	rel release
}

// at is the hold's next deadline in the scheduler's heap.
func (h *hold) at() time.Time {
	if h.refreshing || h.lock.interval == 0 {
		return h.validUntil
	}
	return h.refreshAt
}

func (h *hold) index() *int32 { return &h.heapIdx }

// batchWindow is how early a refresh may go, to share an Extend call with
// others due soon. A retry after a failed refresh waits its full backoff.
func (h *hold) batchWindow() time.Duration {
	if h.failures > 0 {
		return 0
	}
	return h.lock.interval / 4
}

// validity returns the local validity deadline of a request sent at t0.
func (h *hold) validity(t0 time.Time) time.Time { return t0.Add(h.lock.opts.TTL - h.lock.drift) }

// lapse is when a lease confirmed at t has surely lapsed on the server.
func (h *hold) lapse(t time.Time) time.Time { return t.Add(h.lock.opts.TTL + h.lock.drift) }

func (h *hold) spanContext() trace.SpanContext {
	if h.span == nil {
		return trace.SpanContext{}
	}
	return *h.span
}

// release is an owner-checked release waiting for the backend's confirmation.
type release struct {
	lease    Lease
	lock     *lockValue // the Lock value whose hold it ends; nil for an ambiguous attempt
	keyst    *keyState
	lapseAt  time.Time // the lease has surely lapsed on the server by then
	retryAt  time.Time
	attempts int32
	heapIdx  int32
	inflight bool // a worker is releasing it
	queued   bool // in the Manager's release heap
	// graced: neither sent nor taken by a Lock call of the key before
	// notBefore (the grace after an expiry, see endHoldLocked). A flag,
	// not a time: the hold embedding this release then fits a smaller
	// size class (32 bytes less per lock held).
	graced bool
	// repeated: confirmed, and queued again as a best-effort repeat (see
	// Manager.repeatLocked); no longer a pending release of its key.
	repeated bool
	// againMs is the wait (ms) before the next repeat of a release of an
	// attempt of unknown outcome, doubling; 0 for any other release. (With
	// the flags it fits in what was padding: a hold grows none.)
	againMs int32
}

// notBefore is the end of an expired hold's grace (zero when none): the
// drift allowance after the expiry, i.e. the lease's lapse time less its TTL
// (see endHoldLocked and hold.lapse).
func (r *release) notBefore() time.Time {
	if !r.graced {
		return time.Time{}
	}
	return r.lapseAt.Add(-r.lock.opts.TTL)
}

func (r *release) at() time.Time { return r.retryAt }
func (r *release) index() *int32 { return &r.heapIdx }

// endHoldLocked ends h for reason (one of ErrUnlocked, ErrLost, ErrExpired,
// ErrClosed), with an optional cause for detail: closes its expiry channel, frees its Lock
// value and its key for local waiters, and queues the (owner-checked)
// release of the lease, even when the backend said it is lost.
func (m *Manager) endHoldLocked(h *hold, reason, cause error) {
	if h.ended {
		return
	}
	h.ended = true
	h.reason = reason
	h.cause = cause
	if reason == ErrExpired && cause == nil {
		h.cause = h.refreshErr
	}
	if h.heapIdx >= 0 {
		m.holds.remove(h)
	}
	if h.failures > 0 {
		m.failingHolds--
	}
	close(h.expired)
	if h.cancelDo != nil {
		// Synchronous (it runs no user code): a goroutine would leave fn's
		// context live for a while after the hold ended.
		h.cancelDo(endError(h.lock.key, h.errLocked()))
		h.cancelDo = nil
	}
	ks := h.keyst
	ks.holder = nil
	ks.wakeHead()
	h.lock.releaseGateLocked()

	now := time.Now()
	if reason != ErrUnlocked {
		m.warnLocked("ctxlock: hold ended", "key", h.lock.key, "token", h.lease.Token, "reason", h.errLocked())
	}
	if h.announced && (m.obs.Enabled() || h.lock.opts.Tracer != nil) {
		// Recorded after the mutex is released (see unlock): an exporter
		// must not stall the Manager.
		m.endedHolds = append(m.endedHolds, h.endedLocked(now))
	}
	if reason == ErrUnlocked && m.instant != nil {
		// An in-process store: released before Unlock returns.
		if released, wanted := m.instant.TryRelease(h.lease); released {
			if wanted {
				h.lock.contended = true
			}
			if m.obs.Enabled() {
				m.released = append(m.released, inlineRelease{start: now, end: time.Now()})
			}
			m.releaseKeyLocked(ks)
			return
		}
	}
	// After an expiry the lease may still be on the server (the backend was
	// slow, not gone, and a refresh whose answer was lost extended it):
	// releasing it frees the key for others before its TTL. Not at once,
	// though: had no refresh reached the server, the lease would lapse no
	// earlier than the drift allowance after the validity deadline, and
	// that is the time a holder gets to notice the closed channel before
	// anyone else, in this process or another, can take the key. After a
	// loss too: a backend over several stores reports a lease lost once too
	// few of them have it, while some may (redlock), and the release is
	// owner-checked, so it cannot free another owner's lease.
	h.rel = release{lease: h.lease, lock: h.lock, lapseAt: h.lapse(now)}
	at := now
	if reason == ErrExpired {
		h.rel.graced = true
		at = h.rel.notBefore() // now + the drift allowance
	}
	m.queueReleaseLocked(ks, &h.rel, at)
	m.releaseKeyLocked(ks)
}

// errLocked returns why h ended, with detail. It is built on first use, so
// that an Unlock costs no formatting.
func (h *hold) errLocked() error {
	if h.err != nil || !h.ended {
		return h.err
	}
	key := h.lock.key
	switch {
	case h.reason == ErrExpired && h.cause != nil:
		h.err = fmt.Errorf("%w: key %q: validity deadline passed without a confirmed refresh: %w", h.reason, key, h.cause)
	case h.reason == ErrExpired && h.lock.interval == 0:
		h.err = fmt.Errorf("%w: key %q: validity deadline passed (refreshing is off)", h.reason, key)
	case h.reason == ErrExpired:
		h.err = fmt.Errorf("%w: key %q: validity deadline passed with a refresh still unanswered", h.reason, key)
	case h.cause != nil:
		h.err = fmt.Errorf("%w: key %q: %w", h.reason, key, h.cause)
	default:
		h.err = fmt.Errorf("%w: key %q", h.reason, key)
	}
	return h.err
}

// endedLocked describes the end of the ended hold h, at now, for recording.
func (h *hold) endedLocked(now time.Time) endedHold {
	var err error
	if h.reason != ErrUnlocked {
		err = h.errLocked()
	}
	return endedHold{h.lock.opts.Tracer, h.spanContext(), h.lock.key, now.Sub(h.start), now, reasonName(h.reason), err}
}

// inlineRelease is a release that Unlock made in line, from start to end.
type inlineRelease struct{ start, end time.Time }

// endedHold is a hold's end, waiting to be recorded by unlock.
type endedHold struct {
	tracer trace.Tracer // the lock's own (WithTracer), or nil
	span   trace.SpanContext
	key    string
	held   time.Duration
	at     time.Time // when it ended (its recording may come later)
	reason string
	err    error
}

// unlock releases the Manager's mutex, then records what happened while it
// was held: the holds that ended, the change in pending releases, and the
// warnings to log. The tracer, meter and logger are the user's code: called
// with the mutex held, one that panics (or calls back into the Manager)
// would leave every other call on the Manager blocked for ever, and a slow
// one would stall them all.
func (m *Manager) unlock() {
	r := m.takeRecordsLocked()
	m.mu.Unlock()
	m.record(r)
}

// records are what unlock records once the mutex is released.
type records struct {
	ended    []endedHold
	delta    int
	warnings []warning
	released []inlineRelease
}

// takeRecordsLocked takes the records made so far, for recording once the
// mutex is released.
func (m *Manager) takeRecordsLocked() records {
	r := records{m.endedHolds, m.pendingDelta, m.warnings, m.released}
	m.endedHolds, m.pendingDelta, m.warnings, m.released = nil, 0, nil, nil
	return r
}

func (r *records) empty() bool {
	return r.delta == 0 && len(r.warnings) == 0 && len(r.ended) == 0 && len(r.released) == 0
}

// record records r (see unlock).
func (m *Manager) record(r records) {
	if r.empty() {
		return
	}
	// Each record is made even when an earlier one panics (the panic goes
	// on once they all are): a lost hold end would leave ctxlock.held high
	// for ever.
	defer m.recordEnded(r.ended)
	defer m.recordReleased(r.released)
	defer m.logWarnings(r.warnings)
	if r.delta != 0 {
		m.obs.PendingReleases(r.delta)
	}
}

// unlockAsync is unlock for the scheduler goroutine: the records are made
// by a recorder goroutine, not by the scheduler, so that a slow logger,
// tracer or meter (the user's code) cannot delay the expiry of other holds.
// The recorder runs while it has records to make; Close waits for it.
func (m *Manager) unlockAsync() {
	r := m.takeRecordsLocked()
	if r.empty() {
		m.mu.Unlock()
		return
	}
	if len(r.ended) == 0 && len(r.warnings) == 0 && !m.obs.Enabled() {
		// Only a pending-release delta, and no meter to give it to: no
		// user code to wait for, no goroutine to start.
		m.mu.Unlock()
		return
	}
	m.recordQueue = append(m.recordQueue, r)
	start := !m.recording
	m.recording = true
	if start {
		m.recorders.Add(1)
	}
	m.mu.Unlock()
	if start {
		go m.recordLoop()
	}
}

// recordLoop makes the records the scheduler queued, in order, until none
// is left.
func (m *Manager) recordLoop() {
	defer m.recorders.Done()
	for {
		m.mu.Lock()
		if len(m.recordQueue) == 0 {
			m.recordQueue = nil
			m.recording = false
			m.mu.Unlock()
			return
		}
		r := m.recordQueue[0]
		m.recordQueue[0] = records{}
		m.recordQueue = m.recordQueue[1:]
		m.mu.Unlock()
		m.record(r)
	}
}

// recordReleased records in-line releases as release batches of one lease,
// each even when an earlier one's recording panics.
func (m *Manager) recordReleased(released []inlineRelease) {
	if len(released) == 0 {
		return
	}
	defer m.recordReleased(released[1:])
	m.obs.RecordBatch(ctxlockotel.OpRelease, 1, released[0].start, released[0].end)
}

// recordEnded records the ends of holds, each even when an earlier one's
// recording panics.
func (m *Manager) recordEnded(ended []endedHold) {
	if len(ended) == 0 {
		return
	}
	defer m.recordEnded(ended[1:])
	e := &ended[0]
	m.obs.HoldEndedAt(e.tracer, e.span, e.key, e.held, e.at, e.reason, e.err)
}

// logWarnings logs warnings, each even when logging an earlier one panics.
func (m *Manager) logWarnings(warnings []warning) {
	if len(warnings) == 0 {
		return
	}
	defer m.logWarnings(warnings[1:])
	m.log.Warn(warnings[0].msg, warnings[0].args...)
}

// warning is a log record waiting for unlock.
type warning struct {
	msg  string
	args []any
}

// warnLocked logs a warning once the mutex is released (see unlock).
func (m *Manager) warnLocked(msg string, args ...any) {
	m.warnings = append(m.warnings, warning{msg, args})
}

func reasonName(reason error) string {
	switch reason {
	case ErrUnlocked:
		return ctxlockotel.ReasonUnlocked
	case ErrExpired:
		return ctxlockotel.ReasonExpired
	case ErrClosed:
		return ctxlockotel.ReasonClosed
	default:
		return ctxlockotel.ReasonLost
	}
}
