package ctxlock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
)

// Errors returned by Lock, TryLock, Unlock and Do, and reported by Lock.Err once a
// hold has ended. They are sentinel values: test for them with errors.Is, since
// the returned errors wrap them with detail (the key, the backend's fault).
var (
	// ErrNotHeld is returned by Unlock when the Lock value holds nothing: it was
	// never locked, was already unlocked, or its hold already ended.
	ErrNotHeld = errors.New("ctxlock: lock not held")

	// ErrLockActionRequested is returned, together with ErrNotHeld, by an Unlock
	// that repeats an Unlock already requested for the same hold. The first
	// Unlock's release is in progress; nothing more is needed.
	ErrLockActionRequested = errors.New("ctxlock: lock action already requested")

	// ErrUnlocked is the reason Lock.Err reports after Unlock ended a hold.
	ErrUnlocked = errors.New("ctxlock: unlocked")

	// ErrLost is the reason Lock.Err reports when the backend said the lease is
	// no longer owned (it lapsed, or was taken over), and what Do returns when
	// the hold ended before fn returned.
	ErrLost = errors.New("ctxlock: lock lost")

	// ErrExpired is the reason Lock.Err reports when the local validity deadline
	// passed without a confirmed refresh, typically because the backend is
	// unreachable. A refresh confirmed only after the deadline does not count:
	// its answer ends the hold with ErrExpired too. It fires before the
	// server-side TTL ends (Liveness B).
	ErrExpired = errors.New("ctxlock: lock expired")

	// ErrClosed is returned by calls on a closed Manager, and is the reason
	// Lock.Err reports for holds that Manager.Close ended.
	ErrClosed = errors.New("ctxlock: manager closed")

	// ErrHeld is returned by Backend.Acquire when another owner holds the key.
	// Backends return it as a *HeldError carrying the holder's remaining TTL.
	// Lock and TryLock never return it: Lock waits, TryLock reports false.
	ErrHeld = errors.New("ctxlock: held by another owner")

	// ErrUnavailable marks a transient backend fault (unreachable, timed out,
	// failing over). The Manager retries such faults; every other backend error
	// is permanent and returned to the caller.
	ErrUnavailable = errors.New("ctxlock: backend unavailable")

	// ErrInvalidKey is returned for an empty key or a key longer than
	// MaxKeyLength. A backend may refuse further keys with it (goredis, in
	// Cluster mode: a key that, with its prefixes, starts with '}').
	ErrInvalidKey = errors.New("ctxlock: invalid key")

	// ErrInvalidOption is returned for option values that cannot work, such as
	// a TTL ≤ 0 or a refresh interval not shorter than the validity window
	// (the TTL minus the drift allowance, TTL × drift factor + 2ms).
	ErrInvalidOption = errors.New("ctxlock: invalid option")

	// ErrNilContext is returned when a nil context.Context is passed.
	ErrNilContext = errors.New("ctxlock: nil context")

	// ErrNilBackend is returned by every Lock of a Manager made with a nil Backend.
	ErrNilBackend = errors.New("ctxlock: nil backend")
)

// HeldError is the error a Backend returns from Acquire when the key is owned
// by someone else. It matches ErrHeld with errors.Is.
type HeldError struct {
	// Remaining is the holder's remaining TTL as the backend saw it; 0 if unknown.
	Remaining time.Duration
	// Fence is the key's fencing counter when the backend refused the
	// attempt; 0 if unknown. A WaiterQueue backend sets it, so that a
	// Handoff can be told from a stale one (see Handoff).
	Fence uint64
}

// Error says that the key is held, and for how long if known.
func (e *HeldError) Error() string {
	if e.Remaining > 0 {
		return fmt.Sprintf("%v (expires in %v)", ErrHeld, e.Remaining)
	}
	return ErrHeld.Error()
}

// Is reports whether target is ErrHeld.
func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// Unavailable wraps err so that it matches ErrUnavailable (and still matches err).
// Backends use it to mark faults the Manager should retry. It returns nil for nil.
func Unavailable(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// isTransient reports whether a backend error is worth retrying: a fault
// marked with ErrUnavailable, or a timeout (context.DeadlineExceeded,
// os.ErrDeadlineExceeded) that a backend passed on unmarked. A timed-out
// request's outcome is unknown, so treating it as permanent would fail the
// call and leave whatever it took held for its TTL.
func isTransient(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)
}
