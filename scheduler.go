package ctxlock

import (
	"context"
	"errors"
	"math"
	"sync/atomic"
	"time"

	ctxlockotel "github.com/ctxlock/ctxlock/otel"
)

// maxBatch is the most leases one Extend or Release call carries.
const maxBatch = 1024

// releaseTimeout bounds one release batch.
const releaseTimeout = 5 * time.Second

// job is one backend batch the scheduler hands to a worker.
type job struct {
	refresh  []*hold
	ttl      time.Duration
	deadline time.Time // the earliest validity deadline in the batch
	releases []*release
}

// run is the Manager's scheduler goroutine. It owns the timing of every hold:
// it ends holds at their validity deadline, batches due refreshes and releases
// and dispatches them to at most workerLimit workers. It never does backend
// I/O itself, so a hung backend cannot delay an expiry; nor does it call the
// user's tracer, meter or logger: its records go to a recorder goroutine
// (unlockAsync), so a slow one cannot delay an expiry either.
func (m *Manager) run() {
	defer close(m.stopped)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var queue []job
	for {
		now := time.Now()
		m.mu.Lock()
		queue = m.collectLocked(now, queue)
		next := m.nextDeadlineLocked()
		m.timerAt = next
		m.unlockAsync()

		queue = m.dispatch(queue)
		if !next.IsZero() {
			timer.Reset(time.Until(next))
		}
		select {
		case <-timer.C:
		case <-m.wake:
		case <-m.stop:
			timer.Stop()
			m.abandon(queue)
			return
		}
		timer.Stop()
	}
}

// nextDeadlineLocked is the earliest instant the scheduler has work at.
func (m *Manager) nextDeadlineLocked() time.Time {
	var next time.Time
	if m.holds.len() > 0 {
		next = m.holds.peek().at()
	}
	if m.releases.len() > 0 {
		if at := m.releases.peek().at(); next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next
}

// collectLocked ends the holds whose validity deadline has passed and
// appends to queue the refresh and release batches that are due. A refresh is
// due within a quarter of its interval before its time, so that leases due
// close together share one Extend call.
func (m *Manager) collectLocked(now time.Time, queue []job) []job {
	var (
		due      []*hold
		deferred []*hold
	)
	horizon := now.Add(m.maxWindow)
	for m.holds.len() > 0 {
		h := m.holds.peek()
		if !h.validUntil.After(now) {
			m.endHoldLocked(h, ErrExpired, nil)
			continue
		}
		if h.at().After(horizon) {
			break
		}
		m.holds.pop()
		deferred = append(deferred, h)
		if !h.refreshing && h.lock.interval > 0 && !h.refreshAt.After(now.Add(h.batchWindow())) {
			h.refreshing = true
			due = append(due, h)
		}
	}
	for _, h := range deferred {
		m.holds.push(h)
	}
	queue = appendRefreshJobs(queue, due)

	var rs []*release
	for m.releases.len() > 0 && !m.releases.peek().at().After(now) {
		r := m.releases.pop()
		r.queued = false
		if r.repeated && m.closed && r.againMs != closingRepeat {
			continue // Close sends each repeat once more, no more (see repeatLocked)
		}
		r.inflight = true
		rs = append(rs, r)
	}
	for len(rs) > 0 {
		n := min(len(rs), maxBatch)
		queue = append(queue, job{releases: rs[:n:n]})
		rs = rs[n:]
	}
	return queue
}

// appendRefreshJobs groups due holds by TTL (one Extend call carries one TTL)
// into batches of at most maxBatch.
func appendRefreshJobs(queue []job, due []*hold) []job {
	for len(due) > 0 {
		ttl := due[0].lock.opts.TTL
		var batch, rest []*hold
		for _, h := range due {
			if h.lock.opts.TTL == ttl && len(batch) < maxBatch {
				batch = append(batch, h)
			} else {
				rest = append(rest, h)
			}
		}
		j := job{refresh: batch, ttl: ttl, deadline: batch[0].validUntil}
		for _, h := range batch {
			if h.validUntil.Before(j.deadline) {
				j.deadline = h.validUntil
			}
		}
		queue = append(queue, j)
		due = rest
	}
	return queue
}

// keyDeleted is the Manager's DeleteNotifier function: the backend saw
// every lease of key with a token below before end. A hold of key made
// before that (a smaller token) is refreshed at once (after the refresh in
// flight, if any), which ends it if its lease is one that ended; a hold
// made after it is left alone, as the report is of an earlier lease's end
// (typically a release, ours or another owner's). While calls are
// acquiring the key, the report is kept (keyState.noteReport) for the
// holds their attempts in flight may make: their leases may be ones that
// ended. Attempts begun after it do not see it, so a report costs one
// refresh at most, even an unknown bound (math.MaxUint64).
func (m *Manager) keyDeleted(key string, before uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ks := m.keys[key]
	if m.closed || ks == nil {
		return
	}
	if h := ks.holder; h != nil && h.lease.Token < before {
		m.refreshNowLocked(h)
	}
	if ks.acquiring() {
		ks.noteReport(before)
	}
}

// refreshNowLocked brings h's next refresh forward to now, or, when a
// refresh of h is in flight (its answer may predate what made it due),
// makes another follow it at once. Holds made WithoutRefresh are left
// alone.
func (m *Manager) refreshNowLocked(h *hold) {
	switch {
	case h.ended || h.lock.interval == 0:
	case h.refreshing:
		h.recheck = true
	default:
		now := time.Now()
		if h.refreshAt.After(now) {
			h.refreshAt = now
			m.holds.fix(h)
			m.nudgeLocked(now)
		}
	}
}

// dispatch starts a worker for each queued job while the worker limit allows,
// and returns the jobs left waiting for a worker.
func (m *Manager) dispatch(queue []job) []job {
	for i, j := range queue {
		select {
		case m.slots <- struct{}{}:
		default:
			return append(queue[:0], queue[i:]...)
		}
		m.workers.Go(func() error { m.runJob(j); return nil })
	}
	return queue[:0]
}

// abandon gives back jobs that never reached a worker when the scheduler stops.
func (m *Manager) abandon(queue []job) {
	m.mu.Lock()
	defer m.unlock()
	for _, j := range queue {
		for _, h := range j.refresh {
			h.refreshing = false
		}
		for _, r := range j.releases {
			r.inflight = false
		}
	}
}

// runJob performs one batch on a worker and records the results.
func (m *Manager) runJob(j job) {
	// The slot is free before the scheduler wakes: it may dispatch a job
	// that found every worker busy.
	defer func() {
		<-m.slots
		m.nudgeScheduler()
	}()
	if len(j.refresh) > 0 {
		m.refreshBatch(j)
	}
	if len(j.releases) > 0 {
		m.releaseBatch(j.releases)
	}
}

func (m *Manager) nudgeScheduler() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *Manager) refreshBatch(j job) {
	leases := make([]Lease, len(j.refresh))
	for i, h := range j.refresh {
		leases[i] = h.lease // immutable after the hold is made
	}
	ctx, cancel := context.WithDeadline(m.bg, j.deadline)
	defer cancel()
	ctx, span := m.obs.StartBatch(ctx, ctxlockotel.OpRefresh, len(leases))
	t0 := time.Now()
	errs := m.backend.Extend(ctx, leases, j.ttl)
	now := time.Now() // when the answer arrived, before the tracer's span.End
	failed, first := countFailures(errs, len(leases), m.backendName)
	span.End(failed, first)

	m.mu.Lock()
	defer m.unlock()
	for i, h := range j.refresh {
		m.applyRefreshLocked(h, resultAt(errs, i, len(leases), m.backendName), t0, now)
	}
}

// applyRefreshLocked records the outcome of one lease's refresh sent at t0.
func (m *Manager) applyRefreshLocked(h *hold, err error, t0, now time.Time) {
	h.refreshing = false
	recheck := h.recheck
	h.recheck = false
	if h.ended {
		return
	}
	if err == nil && !h.validUntil.After(now) {
		// Confirmed only once the validity deadline had passed: the hold
		// expired then (the scheduler may not have ended it yet), and a
		// late answer must not revive it.
		m.endHoldLocked(h, ErrExpired, nil)
		return
	}
	switch {
	case err == nil:
		if h.failures > 0 {
			m.failingHolds--
		}
		h.failures = 0
		h.refreshErr = nil
		if v := h.validity(t0); v.After(h.validUntil) {
			h.validUntil = v
		}
		h.refreshAt = t0.Add(h.lock.interval)
		if recheck {
			// The key was reported deleted while this refresh was in
			// flight: its answer may predate the deletion.
			h.refreshAt = now
		}
	case errors.Is(err, ErrLost):
		m.endHoldLocked(h, ErrLost, err)
		return
	default:
		if h.failures == 0 {
			m.failingHolds++
		}
		h.failures++
		h.refreshErr = err
		// Doubled per failure up to 1,024 retry delays (10.24s by
		// default), but at least MaxRetryDelay (a retry delay of 1ns would
		// otherwise re-send Extend every microsecond through an outage),
		// and at most half the refresh interval. 63 doublings take any
		// positive delay to any limit (doubled saturates).
		retry := h.lock.opts.RetryDelay
		limit := retry
		for range 10 {
			limit = doubled(limit, math.MaxInt64)
		}
		limit = min(max(limit, MaxRetryDelay), h.lock.interval/2)
		for range min(h.failures, 63) {
			retry = doubled(retry, limit)
		}
		h.refreshAt = now.Add(min(jitter(retry), h.lock.interval/2))
		if h.refreshAt.After(h.validUntil) {
			h.refreshAt = h.validUntil
		}
	}
	m.holds.fix(h)
	m.nudgeLocked(h.at())
}

func (m *Manager) releaseBatch(rs []*release) {
	leases := make([]Lease, len(rs))
	for i, r := range rs {
		leases[i] = r.lease
	}
	ctx, cancel := context.WithTimeout(m.bg, releaseTimeout)
	defer cancel()
	ctx, span := m.obs.StartBatch(ctx, ctxlockotel.OpRelease, len(leases))
	errs, wanted := m.release(ctx, leases)
	failed, first := countFailures(errs, len(leases), m.backendName)
	span.End(failed, first)

	m.mu.Lock()
	defer m.unlock()
	for i, r := range rs {
		m.completeReleaseLocked(r, resultAt(errs, i, len(rs), m.backendName), i < len(wanted) && wanted[i])
	}
}

func countFailures(errs []error, n int, backend string) (int, error) {
	if errs == nil {
		return 0, nil
	}
	if len(errs) != n {
		return n, resultAt(errs, 0, n, backend)
	}
	failed := 0
	var first error
	for _, err := range errs {
		if err != nil {
			if first == nil {
				first = err
			}
			failed++
		}
	}
	return failed, first
}

// heapItem is an element of a deadlineHeap: it knows its deadline and keeps
// its own index so that it can be fixed or removed in O(log n).
type heapItem interface {
	at() time.Time
	index() *int32
}

// deadlineHeap is a min-heap by deadline. Removed items have index -1.
type deadlineHeap[T heapItem] struct {
	items []T
	size  atomic.Int32 // len(items), for a reader without the owner's lock
}

func (q *deadlineHeap[T]) len() int { return len(q.items) }
func (q *deadlineHeap[T]) peek() T  { return q.items[0] }

func (q *deadlineHeap[T]) push(x T) {
	*x.index() = int32(len(q.items))
	q.items = append(q.items, x)
	q.size.Store(int32(len(q.items)))
	q.up(len(q.items) - 1)
}

func (q *deadlineHeap[T]) pop() T {
	x := q.items[0]
	q.remove(x)
	return x
}

func (q *deadlineHeap[T]) remove(x T) {
	i := int(*x.index())
	if i < 0 {
		return
	}
	last := len(q.items) - 1
	if i != last {
		q.swap(i, last)
	}
	var zero T
	q.items[last] = zero
	q.items = q.items[:last]
	q.size.Store(int32(last))
	*x.index() = -1
	if i != last {
		q.fixAt(i)
	}
}

func (q *deadlineHeap[T]) fix(x T) {
	if i := int(*x.index()); i >= 0 {
		q.fixAt(i)
	} else {
		q.push(x)
	}
}

func (q *deadlineHeap[T]) fixAt(i int) {
	if !q.down(i) {
		q.up(i)
	}
}

func (q *deadlineHeap[T]) less(i, j int) bool { return q.items[i].at().Before(q.items[j].at()) }

func (q *deadlineHeap[T]) swap(i, j int) {
	q.items[i], q.items[j] = q.items[j], q.items[i]
	*q.items[i].index() = int32(i)
	*q.items[j].index() = int32(j)
}

func (q *deadlineHeap[T]) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !q.less(i, p) {
			return
		}
		q.swap(i, p)
		i = p
	}
}

func (q *deadlineHeap[T]) down(i int) bool {
	start := i
	n := len(q.items)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		c := l
		if r := l + 1; r < n && q.less(r, l) {
			c = r
		}
		if !q.less(c, i) {
			break
		}
		q.swap(i, c)
		i = c
	}
	return i > start
}
