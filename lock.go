package ctxlock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	ctxlockotel "github.com/ctxlock/ctxlock/otel"
)

// Lock is a distributed lock on one key, made by a LockManager. A Lock value is
// reusable (Lock, Unlock, Lock again: each hold gets a fresh expiry channel) and
// safe for concurrent use: two goroutines calling Lock on one value serialize,
// like sync.Mutex, and TryLock on a value already held reports false at once.
//
// Guarantees (each one is a named test):
//
//   - Liveness A: a lock is always eventually released when the process
//     holding it crashes or exits: the lease lapses after its TTL.
//   - Liveness B: a lock is always eventually released when its backend store
//     is unavailable, and the holder's expiry channel closes BEFORE any other
//     owner can acquire it: the local validity deadline ends the hold before
//     the server-side TTL does.
//   - Atomicity A: no two holders (processes, goroutines, Lock values) hold the
//     same key at once, as long as the expiry channel is respected: work done
//     after it closes is not protected.
//   - Atomicity B: any call to Unlock always eventually releases the lock: the
//     release is retried until the backend confirms it or the lease has lapsed.
type Lock interface {
	// Key returns the key as given to NewLock (without the Manager's namespace).
	Key() string

	// Lock blocks until the lock is acquired, ctx is done, the manager is
	// closed, or an unrecoverable error occurs. Transient backend errors are
	// retried until ctx is done; the returned error then matches ctx.Err() with
	// errors.Is and has the last backend fault joined in.
	//
	// On success it returns the hold's expiry channel. The channel is closed
	// exactly once: by Unlock, or when the hold ends on its own (see Err). It is
	// never closed while the lease is valid and owned, and always closed no
	// later than the local validity deadline.
	Lock(ctx context.Context) (expired <-chan struct{}, err error)

	// TryLock makes at least one attempt and reports whether it succeeded. It
	// returns (false, nil, nil) when the lock is known to be held by someone
	// else, including another Lock value of the same Manager or this value.
	// A transient backend fault is returned as an error matching
	// ErrUnavailable, not retried. An attempt cut short by its own bound
	// (WithAcquireTimeout) may also match context.DeadlineExceeded, as a
	// net/http client timeout does; ctx.Err() tells whether ctx ended.
	TryLock(ctx context.Context) (acquired bool, expired <-chan struct{}, err error)

	// Unlock releases the lock without blocking: it closes the expiry channel
	// at once and hands the release to the manager's scheduler, which retries
	// until the backend confirms or the lease has lapsed on the server. Unlock
	// of a lock not held returns an error matching ErrNotHeld.
	//
	// On a networked backend another process may therefore find the key held
	// for a moment (about a round trip) after Unlock returns; a Lock of the
	// same key through the same Manager does not wait for it. On an
	// in-process store (the memory backend, see InstantReleaser) Unlock
	// releases in line, so every Manager of the store finds the key free
	// once Unlock returns.
	Unlock() error

	// Token is the fencing token of the current hold (strictly increasing per
	// key), 0 when not held. Pass it to the resource you protect so that it can
	// reject writes from a holder whose lock has since been taken over.
	Token() uint64

	// Err is nil while held and before the first hold. Once the expiry channel
	// has closed it says why: it matches ErrUnlocked, ErrLost, ErrExpired or
	// ErrClosed, wrapped with detail.
	Err() error
}

// LockManager is a factory for Lock values.
type LockManager interface {
	// Health reports opaque conditions of the backend and the scheduler
	// (unreachable nodes, refresh lag, pending releases); err when unusable.
	Health(ctx context.Context) (conditions []string, err error)
	// NewLock returns a Lock for key. It does no I/O. Invalid keys and options
	// surface as errors from Lock and TryLock.
	NewLock(key string, opts ...LockOption) Lock
}

// lockValue is the Lock implementation. Its hold state is guarded by the
// Manager's mutex; busy serializes holds of this value.
type lockValue struct {
	m        *Manager
	key      string
	fullKey  string
	opts     LockOptions
	interval time.Duration // refresh interval; 0 when refreshing is off
	drift    time.Duration // drift allowance subtracted from every validity window
	invalid  error         // why this lock can never be acquired, or nil

	// Guarded by m.mu.
	cur       *hold           // the current or most recent hold
	waiter    waiter          // this value's place in its key's local queue
	busy      bool            // a hold or a Lock/TryLock call is in progress
	gateQueue []chan struct{} // Lock calls waiting for busy to clear, FIFO

	// queuedLast: this value's last Lock call had to queue for the key (a
	// WaiterQueue backend). Atomic: the call sets it as it returns, after
	// an Unlock may have let the next call on the value read it.
	queuedLast atomic.Bool

	// contended: another owner wanted the key during this value's last hold,
	// so its next Lock yields once before attempting. Guarded by m.mu.
	contended bool
}

func (l *lockValue) Key() string { return l.key }

func (l *lockValue) Lock(ctx context.Context) (<-chan struct{}, error) {
	_, ch, err := l.acquire(ctx, false)
	return ch, err
}

func (l *lockValue) TryLock(ctx context.Context) (bool, <-chan struct{}, error) {
	return l.acquire(ctx, true)
}

func (l *lockValue) acquire(ctx context.Context, try bool) (bool, <-chan struct{}, error) {
	// Recorded like every call, even one rejected at once (StartAcquire
	// takes a nil ctx).
	nilCtx := ctx == nil
	ctx, rec := l.m.obs.StartAcquire(ctx, l.opts.Tracer, try, l.key)
	fail := func(outcome string, err error) (bool, <-chan struct{}, error) {
		rec.End(outcome, 0, err)
		return false, nil, err
	}
	if nilCtx {
		return fail(ctxlockotel.OutcomeError, fmt.Errorf("ctxlock: lock %q: %w", l.key, ErrNilContext))
	}
	if l.invalid != nil {
		return fail(ctxlockotel.OutcomeError, l.invalid)
	}
	if err := ctx.Err(); err != nil {
		return fail(ctxlockotel.OutcomeCanceled, fmt.Errorf("ctxlock: lock %q: %w", l.key, waitErr(ctx, nil)))
	}
	m := l.m
	m.mu.Lock()
	if !l.busy {
		l.busy = true
		m.unlock()
	} else {
		if try {
			m.unlock()
			rec.Attempt(true)
			return fail(ctxlockotel.OutcomeHeld, nil)
		}
		turn := make(chan struct{})
		l.gateQueue = append(l.gateQueue, turn)
		m.unlock()
		// leaveGate gives our place in the value's queue up.
		leaveGate := func() {
			m.mu.Lock()
			n := len(l.gateQueue)
			if l.gateQueue = removeItem(l.gateQueue, turn); len(l.gateQueue) == n {
				l.releaseGateLocked() // our turn came as we gave up: pass it on
			}
			m.unlock()
		}
		// Should the tracer or meter panic, the call leaves the value's
		// queue first: else the value's turn would be handed to nobody.
		recorded := false
		func() {
			defer func() {
				if !recorded {
					leaveGate()
				}
			}()
			rec.Queued()
			recorded = true
		}()
		var err error
		var outcome string
		select {
		case <-turn:
		case <-ctx.Done():
			outcome, err = ctxlockotel.OutcomeCanceled, fmt.Errorf("ctxlock: lock %q: %w", l.key, waitErr(ctx, nil))
		case <-m.done:
			outcome, err = ctxlockotel.OutcomeClosed, fmt.Errorf("ctxlock: lock %q: %w", l.key, ErrClosed)
		}
		if err != nil {
			leaveGate()
			return fail(outcome, err)
		}
	}
	// The value's gate is this call's now; a hold made by the call takes it
	// over (its end frees the value). Should the user's tracer or meter
	// panic with no hold made, the value is freed all the same: else every
	// later call on it would wait, or report the key held, for ever.
	m.mu.Lock()
	prev := l.cur
	m.mu.Unlock()
	returned := false
	defer func() {
		if !returned {
			m.mu.Lock()
			if l.cur == prev {
				l.releaseGateLocked()
			}
			m.unlock()
		}
	}()
	h, err := m.acquire(ctx, l, try, &rec)
	returned = true
	if h == nil {
		m.mu.Lock()
		l.releaseGateLocked()
		m.unlock()
		return false, nil, err
	}
	return true, h.expired, nil
}

// releaseGateLocked ends this value's turn: the next queued Lock call on the
// value gets it, in FIFO order, or the value becomes free.
func (l *lockValue) releaseGateLocked() {
	if len(l.gateQueue) == 0 {
		l.busy = false
		return
	}
	close(l.gateQueue[0])
	l.gateQueue = slices.Delete(l.gateQueue, 0, 1)
}

func (l *lockValue) Unlock() error {
	m := l.m
	m.mu.Lock()
	h := l.cur
	if h == nil || h.ended {
		again := h != nil && h.unlocked
		m.unlock()
		if again {
			return fmt.Errorf("ctxlock: unlock %q: %w: %w", l.key, ErrNotHeld, ErrLockActionRequested)
		}
		return fmt.Errorf("ctxlock: unlock %q: %w", l.key, ErrNotHeld)
	}
	m.unlockLocked(h)
	return nil
}

func (l *lockValue) Token() uint64 {
	l.m.mu.Lock()
	defer l.m.unlock()
	if h := l.cur; h != nil && !h.ended {
		return h.lease.Token
	}
	return 0
}

func (l *lockValue) Err() error {
	l.m.mu.Lock()
	defer l.m.unlock()
	if h := l.cur; h != nil && h.ended {
		return h.errLocked()
	}
	return nil
}

// Do acquires l, runs fn with a context that is cancelled (with cause) when the
// lock is lost, then unlocks. For a Lock of this package the context is
// cancelled as the hold ends, together with the expiry channel, so it
// carries the same guarantee: it is done before another owner can acquire
// the key. It returns fn's error, or an error wrapping
// ErrLost (and the reason from l.Err) when the hold ended before fn returned;
// both, joined, when both happened. A hold that fn (or another goroutine)
// ended with l.Unlock was not lost: fn's context is then cancelled with
// l.Err (ErrUnlocked) as its cause, and Do returns fn's error alone. If the
// lock cannot be acquired, fn does not run and Do returns Lock's error. Do
// unlocks only the hold it acquired, never a later hold of l made by
// another goroutine (for a Lock of this package; another implementation
// gets a plain Unlock). A nil l or fn is an error matching ErrInvalidOption.
func Do(ctx context.Context, l Lock, fn func(ctx context.Context) error) (err error) {
	if l == nil || fn == nil {
		return fmt.Errorf("ctxlock: Do needs a Lock and a function: %w", ErrInvalidOption)
	}
	expired, err := l.Lock(ctx)
	if err != nil {
		return err
	}
	reason := l.Err // why the hold ended; l's current hold, unless we can tell ours
	// fctx's parent is a context of this package, not ctx: cancelling
	// fctx then calls none of the methods of ctx, which may be the user's
	// own Context type, as the hold cancels it with the Manager's mutex
	// held (see cancelOnEnd).
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	fctx, cancel := context.WithCancelCause(pctx)
	stop := make(chan struct{})
	watcherDone := make(chan struct{})
	if lv, ok := l.(*lockValue); ok {
		reason = lv.holdReason(expired)
		// The hold cancels fctx as it ends (see endHoldLocked), not a
		// goroutine switch later, when fn could still find it live after
		// another owner took the key.
		lv.cancelOnEnd(expired, cancel, reason)
		close(watcherDone)
	} else {
		go func() {
			defer close(watcherDone)
			select {
			case <-expired:
				cancel(endError(l.Key(), reason()))
			case <-stop:
			}
		}()
	}
	// Unlock even when fn panics: the panic goes on, the lock does not stay held.
	defer func() {
		close(stop)
		<-watcherDone
		cancel(nil)
		select {
		case <-expired:
			if end := endError(l.Key(), reason()); !errors.Is(end, ErrUnlocked) {
				err = errors.Join(err, end)
			}
		default:
			if lv, ok := l.(*lockValue); ok {
				// Our hold only: it may end just now, and another
				// goroutine lock l again, before an Unlock would run.
				lv.unlockHold(expired)
			} else {
				_ = l.Unlock() // ErrNotHeld only if the hold ended just now
			}
		}
	}()
	return fn(fctx)
}

// unlockLocked ends h as unlocked and releases m.mu.
func (m *Manager) unlockLocked(h *hold) {
	h.unlocked = true
	m.endHoldLocked(h, ErrUnlocked, nil)
	m.unlock()
}

// unlockHold unlocks the hold of l whose expiry channel is expired, if it is
// still l's current hold and has not ended, and reports whether it did.
func (l *lockValue) unlockHold(expired <-chan struct{}) bool {
	m := l.m
	m.mu.Lock()
	h := l.cur
	if h == nil || h.ended || h.expired != expired {
		m.unlock()
		return false
	}
	m.unlockLocked(h)
	return true
}

// cancelOnEnd has the hold of l whose expiry channel is expired cancel Do's
// context as it ends, with the reason; at once if it has ended already.
func (l *lockValue) cancelOnEnd(expired <-chan struct{}, cancel context.CancelCauseFunc, reason func() error) {
	m := l.m
	m.mu.Lock()
	if h := l.cur; h != nil && h.expired == expired && !h.ended {
		h.cancelDo = cancel
		m.unlock()
		return
	}
	m.unlock()
	cancel(endError(l.key, reason()))
}

// endError says why a hold of key ended, given its reason (see Lock.Err):
// the reason itself when the hold was unlocked or lost, else (expired,
// closed) an error wrapping ErrLost and the reason; an error wrapping ErrLost
// alone when the reason can no longer be told (nil: the Lock value holds the
// key again).
func endError(key string, reason error) error {
	if reason == nil {
		// Our hold ended, but l holds the key again (another goroutine
		// locked it first) and can no longer say why.
		return fmt.Errorf("ctxlock: hold of %q ended early: %w", key, ErrLost)
	}
	if errors.Is(reason, ErrLost) || errors.Is(reason, ErrUnlocked) {
		return reason
	}
	return fmt.Errorf("ctxlock: hold of %q ended early: %w: %w", key, ErrLost, reason)
}

// holdReason returns Err for the hold of l whose expiry channel is expired
// alone: nil while it lasts, why it ended afterwards, even once l holds the
// key again. When that hold is no longer l's current one (it ended, and
// another goroutine locked l again, before this call), it returns l.Err.
func (l *lockValue) holdReason(expired <-chan struct{}) func() error {
	l.m.mu.Lock()
	h := l.cur
	l.m.unlock()
	if h == nil || h.expired != expired {
		return l.Err
	}
	return func() error {
		l.m.mu.Lock()
		defer l.m.unlock()
		if h.ended {
			return h.errLocked()
		}
		return nil
	}
}
