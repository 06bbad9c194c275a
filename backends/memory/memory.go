// Package memory is an in-process ctxlock.Backend for development,
// examples, tests and single-process programs, and the reference implementation of the
// backend contract.
//
// Leases have real TTL semantics on time.Now, so the backend runs unchanged
// inside a testing/synctest bubble, where TTLs of hours pass in microseconds
// (it is locktest.FakeTimeSafe: locktest.Run tests it under fake time).
// Every key has a fencing counter that survives releases, and watchers are
// notified when a key is released or its lease lapses. SetUnavailable and
// SetLatency are switches for tests: they make the store fail or slow.
//
// Several Managers sharing one Backend contend as separate processes would.
// A key that is free and unwatched is forgotten, so a long-running program
// that locks many distinct keys (one per order, say) keeps memory only for
// the keys held or watched now. Tokens stay strictly increasing per key: a
// key locked again after it was forgotten starts above every token of a
// forgotten key, so only the first lock of a new store is sure to get
// token 1.
//
//	store := memory.New()
//	defer store.Close() // after the Managers: a Manager does not own its backend
//	m := ctxlock.NewManager(store)
//	defer m.Close(context.Background())
//
// Locks on one store exclude each other only within the process: for locking
// across processes use a networked backend (goredis, redlock).
//
// Releases wait for nothing, so a Manager's Unlock performs its release in
// line (ctxlock.InstantReleaser): once Unlock returns, every Manager of the
// store finds the key free. While SetLatency or SetUnavailable is in force,
// releases go through the Manager's scheduler, as on a networked backend;
// so do those of a Manager given a wrapper that embeds the Backend, which
// sends them with the wrapper's methods (its ReleaseContended, promoted
// from the Backend unless the wrapper overrides or hides it, else its
// Release).
package memory

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ctxlock/ctxlock"
)

// ErrClosed is returned by every call on a closed Backend.
var ErrClosed = errors.New("memory: backend closed")

// errUnavailable is what calls return while SetUnavailable(true) is in force.
var errUnavailable = ctxlock.Unavailable(errors.New("memory: store unavailable (test switch)"))

// Backend is an in-memory lease store. The zero value is not usable: call New.
type Backend struct {
	unavailable atomic.Bool
	latency     atomic.Int64 // time.Duration added to every call

	mu     sync.Mutex
	keys   map[string]*entry
	closed bool
	stats  Stats
	// floor is the highest fencing token of a forgotten key: a new entry's
	// counter starts there.
	floor uint64
	// sweepAt is the number of entries at which the next new key first
	// forgets the lapsed leases that nobody released or looked at since.
	sweepAt int
	// spare is a forgotten entry, zeroed, for the next new key: a
	// Lock/Unlock loop, which forgets its key at every release, makes
	// no garbage.
	spare *entry
}

type entry struct {
	owner    string // "" when free
	metadata string
	expires  time.Time
	fence    uint64
	wanted   bool // another owner found it held during the current lease
	watchers map[*watcher]struct{}
	timer    *time.Timer // notifies watchers when the lease lapses; only while watched
}

type watcher struct{ ch chan struct{} }

// Stats counts the calls a Backend served, for tests and benchmarks.
type Stats struct {
	Acquires       int // Acquire calls, and the acquire step of Relock
	ExtendCalls    int // Extend calls (batches)
	ExtendedLeases int // leases in all Extend calls
	ReleaseCalls   int // Release calls (batches), and the release step of Relock
	ReleasedLeases int // leases in all Release calls, and one per Relock
}

var (
	_ ctxlock.Backend            = (*Backend)(nil)
	_ ctxlock.ContentionReporter = (*Backend)(nil)
	_ ctxlock.Relocker           = (*Backend)(nil)
)

// New returns an empty store.
func New() *Backend {
	return &Backend{keys: make(map[string]*entry), sweepAt: minSweep}
}

// minSweep is the smallest store that is swept for lapsed leases: below it
// the sweep would cost more than the entries it frees.
const minSweep = 1024

// entryLocked returns key's entry, making one (counting on from the floor)
// if the key has none.
func (b *Backend) entryLocked(key string, now time.Time) *entry {
	if e := b.keys[key]; e != nil {
		return e
	}
	if len(b.keys) >= b.sweepAt {
		b.sweepLocked(now)
	}
	e := b.spare
	if e != nil {
		b.spare = nil
	} else {
		e = new(entry)
	}
	e.fence = b.floor
	b.keys[key] = e
	return e
}

// forgetLocked drops key's entry if it is free and unwatched. Its counter
// survives as the floor, which every later new entry starts from.
func (b *Backend) forgetLocked(key string, e *entry) {
	if e.owner != "" || len(e.watchers) > 0 || b.keys[key] != e {
		return
	}
	b.floor = max(b.floor, e.fence)
	delete(b.keys, key)
	if b.spare == nil && e.timer == nil {
		// Nothing refers to it any more: a watcher's stop, which does,
		// ran before it could be forgotten.
		*e = entry{}
		b.spare = e
	}
}

// sweepLocked forgets the unwatched keys whose leases lapsed without a
// release (their holders crashed, or never came back), so that they do not
// pile up; amortised, each new key pays for one entry looked at.
func (b *Backend) sweepLocked(now time.Time) {
	for key, e := range b.keys {
		if e.owner != "" && len(e.watchers) == 0 && !now.Before(e.expires) {
			e.owner, e.metadata, e.wanted = "", "", false
		}
		b.forgetLocked(key, e)
	}
	b.sweepAt = max(2*len(b.keys), minSweep)
}

// BackendName returns "memory".
func (b *Backend) BackendName() string { return "memory" }

// FakeTimeSafe reports true: the backend keeps everything in the process and
// uses only time.Now and timers, so it can run inside a testing/synctest
// bubble (locktest.Run then tests it under fake time).
func (b *Backend) FakeTimeSafe() bool { return true }

// SetUnavailable makes every call fail with an error matching
// ctxlock.ErrUnavailable (true) or work again (false). Leases keep lapsing
// meanwhile, as on a real server that is cut off.
func (b *Backend) SetUnavailable(down bool) { b.unavailable.Store(down) }

// SetLatency adds d to every call (0 turns it off). A call whose context or
// acquire timeout ends first fails with an error matching
// ctxlock.ErrUnavailable and has no effect.
func (b *Backend) SetLatency(d time.Duration) { b.latency.Store(int64(d)) }

// Stats returns the call counts so far.
func (b *Backend) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

// Holder reports who holds key: the owner id, metadata, fencing token and the
// remaining TTL. ok is false when the key is free.
func (b *Backend) Holder(key string) (owner, metadata string, token uint64, remaining time.Duration, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.liveLocked(key, time.Now())
	if e == nil {
		return "", "", 0, 0, false
	}
	return e.owner, e.metadata, e.fence, time.Until(e.expires), true
}

// Evict makes the store forget key's lease, as data loss on a real server
// would (its fencing counter survives). The holder finds out at its next
// refresh (ErrLost). Watchers are notified.
func (b *Backend) Evict(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e := b.keys[key]; e != nil && e.owner != "" {
		e.owner, e.metadata = "", ""
		notifyLocked(e)
		b.forgetLocked(key, e)
	}
}

// delay applies the test switches: latency first, then availability.
func (b *Backend) delay(ctx context.Context, timeout time.Duration) error {
	if err := b.wait(ctx, timeout); err != nil {
		return err
	}
	if b.unavailable.Load() {
		return errUnavailable
	}
	return nil
}

// wait applies the latency switch.
func (b *Backend) wait(ctx context.Context, timeout time.Duration) error {
	if d := time.Duration(b.latency.Load()); d > 0 {
		if timeout <= 0 || timeout > d {
			timeout = d + 1
		}
		t := time.NewTimer(min(d, timeout))
		defer t.Stop()
		select {
		case <-t.C:
			if timeout <= d {
				return ctxlock.Unavailable(fmt.Errorf("memory: call timed out after %v: %w", timeout, context.DeadlineExceeded))
			}
		case <-ctx.Done():
			return ctxlock.Unavailable(context.Cause(ctx))
		}
	}
	return nil
}

// liveLocked returns key's entry if it is held and not lapsed at now.
func (b *Backend) liveLocked(key string, now time.Time) *entry {
	e := b.keys[key]
	if e == nil || e.owner == "" {
		return nil
	}
	if !now.Before(e.expires) {
		e.owner, e.metadata, e.wanted = "", "", false
		b.forgetLocked(key, e)
		return nil
	}
	return e
}

// Acquire implements ctxlock.Backend.
func (b *Backend) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	if err := b.delay(ctx, req.Timeout); err != nil {
		return ctxlock.Lease{}, err
	}
	if err := validRequest(req); err != nil {
		return ctxlock.Lease{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ctxlock.Lease{}, ErrClosed
	}
	return b.acquireLocked(req, time.Now())
}

func validRequest(req ctxlock.AcquireRequest) error {
	if req.Key == "" || req.Owner == "" || req.TTL <= 0 {
		return fmt.Errorf("memory: invalid acquire request (key %q, owner %q, ttl %v)", req.Key, req.Owner, req.TTL)
	}
	return nil
}

func (b *Backend) acquireLocked(req ctxlock.AcquireRequest, now time.Time) (ctxlock.Lease, error) {
	b.stats.Acquires++
	if e := b.liveLocked(req.Key, now); e != nil {
		if e.owner != req.Owner {
			e.wanted = true
		}
		return ctxlock.Lease{}, &ctxlock.HeldError{Remaining: e.expires.Sub(now)}
	}
	e := b.entryLocked(req.Key, now)
	e.owner, e.metadata = req.Owner, req.Metadata
	e.wanted = false
	e.expires = now.Add(req.TTL)
	e.fence++
	b.armLocked(req.Key, e)
	return ctxlock.Lease{Key: req.Key, Owner: req.Owner, Token: e.fence}, nil
}

// Relock implements ctxlock.Relocker: it releases old and, unless another
// owner wanted its key, acquires req, in one step. It never queues (queued
// is false): the backend has no waiter queue.
func (b *Backend) Relock(ctx context.Context, old ctxlock.Lease, req ctxlock.AcquireRequest) (lease ctxlock.Lease, wanted, queued bool, err error) {
	if err := b.delay(ctx, req.Timeout); err != nil {
		return ctxlock.Lease{}, false, false, err
	}
	if err := validRequest(req); err != nil {
		return ctxlock.Lease{}, false, false, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ctxlock.Lease{}, false, false, ErrClosed
	}
	b.stats.ReleaseCalls++
	b.stats.ReleasedLeases++
	now := time.Now()
	if e := b.keys[old.Key]; e != nil && e.owner != "" && e.owner == old.Owner {
		// The wanted mark lasts as long as the lease (as on Redis, where it
		// has the lease's remaining TTL): once the lease has lapsed, those
		// who wanted it have been told, and nobody is kept waiting by it.
		wanted := e.wanted && now.Before(e.expires)
		e.owner, e.metadata, e.wanted = "", "", false
		if wanted || old.Key != req.Key {
			if e.timer != nil {
				e.timer.Stop()
			}
			notifyLocked(e)
		}
		if wanted {
			b.forgetLocked(old.Key, e)
			return ctxlock.Lease{}, true, false, nil
		}
		if old.Key != req.Key {
			b.forgetLocked(old.Key, e)
		}
	}
	lease, err = b.acquireLocked(req, now)
	return lease, false, false, err
}

// Extend implements ctxlock.Backend.
func (b *Backend) Extend(ctx context.Context, leases []ctxlock.Lease, ttl time.Duration) []error {
	if err := b.delay(ctx, 0); err != nil {
		return fill(len(leases), err)
	}
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return fill(len(leases), ErrClosed)
	}
	if ttl <= 0 {
		// Bad input, not a lost lease: the leases stay as they are.
		return fill(len(leases), fmt.Errorf("memory: extend: %w: TTL %v", ctxlock.ErrInvalidOption, ttl))
	}
	b.stats.ExtendCalls++
	b.stats.ExtendedLeases += len(leases)
	errs := make([]error, len(leases))
	for i, l := range leases {
		e := b.liveLocked(l.Key, now)
		if e == nil || e.owner != l.Owner {
			errs[i] = fmt.Errorf("memory: extend %q: %w", l.Key, ctxlock.ErrLost)
			continue
		}
		e.expires = now.Add(ttl)
		b.armLocked(l.Key, e)
	}
	return errs
}

// Release implements ctxlock.Backend.
func (b *Backend) Release(ctx context.Context, leases []ctxlock.Lease) []error {
	errs, _ := b.ReleaseContended(ctx, leases)
	return errs
}

// ReleaseContended implements ctxlock.ContentionReporter: it releases like
// Release and reports which leases another owner tried to take while they
// lasted (the mark lapses with the lease, as on Redis).
func (b *Backend) ReleaseContended(ctx context.Context, leases []ctxlock.Lease) (errs []error, contended []bool) {
	if err := b.delay(ctx, 0); err != nil {
		return fill(len(leases), err), nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return fill(len(leases), ErrClosed), nil
	}
	b.stats.ReleaseCalls++
	b.stats.ReleasedLeases += len(leases)
	now := time.Now()
	for i, l := range leases {
		if b.releaseLocked(l, now) {
			if contended == nil {
				contended = make([]bool, len(leases))
			}
			contended[i] = true
		}
	}
	return make([]error, len(leases)), contended
}

// TryRelease implements ctxlock.InstantReleaser: with no latency set, the
// store available and open, it releases lease as Release does, at once, and
// reports true; else it does nothing. A Manager calls it from Unlock, so
// that the key is free when Unlock returns; not through a wrapper that
// embeds the Backend (see InstantBackend).
func (b *Backend) TryRelease(lease ctxlock.Lease) (released, wanted bool) {
	if b.latency.Load() > 0 || b.unavailable.Load() {
		return false, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false, false
	}
	b.stats.ReleaseCalls++
	b.stats.ReleasedLeases++
	return true, b.releaseLocked(lease, time.Now())
}

// InstantBackend implements ctxlock.InstantReleaser: it returns b. A
// Manager given a wrapper that embeds b sees b here, not the wrapper, and
// sends its releases through the wrapper's Release.
func (b *Backend) InstantBackend() ctxlock.Backend { return b }

// releaseLocked frees l's key if l still owns it, and reports whether
// another owner tried to take the key while l owned it.
func (b *Backend) releaseLocked(l ctxlock.Lease, now time.Time) (wanted bool) {
	// A lapsed lease still naming this owner was not taken by anyone
	// since, so freeing it changes nothing for others; but its wanted
	// mark lapsed with it (see Relock).
	e := b.keys[l.Key]
	if e == nil || e.owner == "" || e.owner != l.Owner {
		return false
	}
	wanted = e.wanted && now.Before(e.expires)
	e.owner, e.metadata, e.wanted = "", "", false
	if e.timer != nil {
		e.timer.Stop()
	}
	notifyLocked(e)
	b.forgetLocked(l.Key, e)
	return wanted
}

func fill(n int, err error) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
}

// armLocked makes sure watchers of a held key hear of its lapse.
func (b *Backend) armLocked(key string, e *entry) {
	if len(e.watchers) == 0 || e.owner == "" {
		return
	}
	d := time.Until(e.expires)
	if e.timer == nil {
		e.timer = time.AfterFunc(d, func() { b.lapsed(key) })
	} else {
		e.timer.Reset(d)
	}
}

// lapsed runs when a watched lease's TTL ends.
func (b *Backend) lapsed(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.keys[key]
	if e == nil || b.closed {
		return
	}
	if b.liveLocked(key, time.Now()) == nil {
		notifyLocked(e)
	} else {
		b.armLocked(key, e) // extended meanwhile
	}
}

func notifyLocked(e *entry) {
	for w := range e.watchers {
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
}

// Watch implements ctxlock.Backend: the channel receives after every release
// or lapse of key.
func (b *Backend) Watch(key string) (<-chan struct{}, func()) {
	w := &watcher{ch: make(chan struct{}, 1)}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, func() {}
	}
	e := b.entryLocked(key, time.Now())
	if e.watchers == nil {
		e.watchers = make(map[*watcher]struct{})
	}
	e.watchers[w] = struct{}{}
	b.armLocked(key, e)
	var once sync.Once
	return w.ch, func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			delete(e.watchers, w)
			if len(e.watchers) == 0 {
				// A held key's entry stays: drop the empty map, which
				// would more than double it (a map does not shrink).
				e.watchers = nil
				if e.timer != nil {
					e.timer.Stop()
					e.timer = nil
				}
			}
			if !b.closed {
				b.liveLocked(key, time.Now()) // a lapsed lease need not be kept
				b.forgetLocked(key, e)
			}
		})
	}
}

// Health implements ctxlock.Backend.
func (b *Backend) Health(ctx context.Context) ([]string, error) {
	if err := b.wait(ctx, 0); err != nil {
		return []string{"memory: no answer (test latency)"}, err
	}
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	switch {
	case closed:
		return []string{"memory: closed"}, ErrClosed
	case b.unavailable.Load():
		return []string{"memory: unavailable (test switch)"}, errUnavailable
	}
	return nil, nil
}

// Close stops the store's timers. Later Acquire, Extend, Release, Relock and
// Health calls fail with ErrClosed (after any latency set; SetUnavailable
// makes the first four fail with the unavailable error first); Watch
// returns a nil channel.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for _, e := range b.keys {
		if e.timer != nil {
			e.timer.Stop()
			e.timer = nil
		}
	}
	return nil
}
