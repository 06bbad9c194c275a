package ctxlock

import (
	"context"
	"strconv"
	"time"
)

// Backend stores leases. It knows nothing of scheduling, refreshing, waiting
// or expiry channels: the Manager does all of that on top of these calls.
//
// Keys passed to a Backend are full keys (the Manager's namespace already
// prepended). Owners are unique per hold. Every method must be safe for
// concurrent use. Errors that the Manager should retry must match
// ErrUnavailable (see Unavailable); so do timeouts passed on unmarked
// (context.DeadlineExceeded, os.ErrDeadlineExceeded) while the caller's
// context is live. Any other error is treated as permanent.
//
// Batch calls exist so that one round trip (a pipeline) refreshes or releases
// many leases; their result slices must have one entry per lease, in order
// (nil for a lease that succeeded), also when every lease succeeded: the
// conformance suite (backends/locktest) checks it. The Manager, to be
// lenient, takes a nil slice as every lease succeeding.
//
// A minimal Backend implements only these methods; the optional interfaces
// below (ContentionReporter, InstantReleaser, Relocker, RoundTripNotifier,
// WaiterQueue, DeleteNotifier, BackendNamer) make it fairer, cheaper or
// quicker to react, not correct.
type Backend interface {
	// Acquire takes req.Key for req.Owner for req.TTL if nobody owns it, and
	// returns the lease: Key req.Key, Owner req.Owner (the Manager refuses
	// any other), and a fencing token that is positive (0 means "not held"
	// to Lock.Token) and strictly greater than every token issued for the
	// key before, also for leases that have since lapsed or been lost.
	// When another owner holds the key it returns a
	// *HeldError (matching ErrHeld) with the holder's remaining TTL; the
	// Manager wakes its waiters when that runs out, so a backend whose Watch
	// cannot see lapses should report it. It must
	// give up after req.Timeout (a Timeout ≤ 0 sets no bound of its own: ctx
	// bounds the attempt). The Manager does not put req.Timeout on ctx: the
	// backend must apply it itself, and a request it sent and then timed out
	// has an unknown outcome. An attempt whose outcome is unknown must
	// return an error matching ErrUnavailable: the Manager then releases
	// (Key, Owner), so an ambiguous attempt never blocks others for a whole
	// TTL; and, in case the attempt's request reaches the backend after that
	// release, releases it again, now and then, until the lease would have
	// lapsed. Releasing an owner that holds nothing must be harmless.
	Acquire(ctx context.Context, req AcquireRequest) (Lease, error)

	// Extend sets the TTL of every lease still owned by its owner to ttl
	// (counted from now). Per lease it reports nil, an error matching ErrLost
	// when the lease is no longer owned, or a transient error (matching
	// ErrUnavailable). A ttl ≤ 0 is bad input, not a loss: every lease then
	// reports an error matching ErrInvalidOption and stays as it was (the
	// Manager never sends one; locktest checks it).
	Extend(ctx context.Context, leases []Lease, ttl time.Duration) []error

	// Release deletes every lease still owned by its owner and wakes the
	// key's watchers. Per lease it reports nil (released, or no longer owned:
	// either way it is gone) or an error; a transient error makes the Manager
	// retry until the lease has lapsed.
	Release(ctx context.Context, leases []Lease) []error

	// Watch returns a channel that receives a value after key is released or
	// lapses, and a stop function that must be called when the watcher is
	// done. Signals may be coalesced and may be spurious: they are hints to
	// retry now. A nil channel means the backend cannot notify (the Manager
	// then polls with backoff, never sleeping past the Remaining of the
	// latest HeldError; return a no-op stop all the same). A backend that notifies
	// releases but cannot see lapses (a store that expires keys silently)
	// may leave lapses to HeldError.Remaining.
	Watch(key string) (released <-chan struct{}, stop func())

	// Health reports conditions worth an operator's attention (unreachable
	// nodes, a lost subscription). err is non-nil when the backend is unusable.
	Health(ctx context.Context) (conditions []string, err error)

	// Close releases the backend's own resources. The Manager never calls it:
	// whoever made the backend closes it, after closing its Managers.
	Close() error
}

// AcquireRequest asks a Backend for a new lease.
type AcquireRequest struct {
	Key      string        // full key, namespace included
	Owner    string        // unique id of this hold
	TTL      time.Duration // lease duration on the backend
	Timeout  time.Duration // the attempt's bound; ≤ 0: none of its own, ctx bounds it
	Metadata string        // opaque owner text (WithMetadata), may be empty
	// Waiter identifies one blocking Lock call across all its attempts. It
	// is empty for TryLock, and always empty unless the Backend implements
	// WaiterQueue. A WaiterQueue backend queues refused waiters
	// and keeps a released key for the first of them. The Manager's waiter
	// ids sort (byte-wise) in the order their Lock calls started, by each
	// process's wall clock, so that a backend of several servers can keep
	// one queue order on all of them (a process whose clock is behind by d
	// goes ahead of calls that started less than d before its own).
	Waiter string
}

// Lease is a granted hold on a key, as the backend issued it.
type Lease struct {
	// Key is the backend key (with the Manager's namespace prefix).
	Key string
	// Owner is the unique id of this hold (AcquireRequest.Owner, or
	// GrantOwner for a key a WaiterQueue backend granted to a waiter);
	// extend and release are checked against it.
	Owner string
	// Token is the fencing token: positive and strictly increasing per key.
	Token uint64
}

// ContentionReporter is an optional interface of a Backend that can tell,
// when it releases a lease, whether other owners wanted the key meanwhile.
//
// The Manager uses it for fairness between processes: a Lock that re-takes a
// key its own Manager just released would otherwise always win against
// waiters elsewhere, which learn of the release a round trip later. When the
// release reports contention, that Lock first yields (it waits for a
// notification or its retry delay) so that a waiting owner gets the key.
type ContentionReporter interface {
	// ReleaseContended is Release, also reporting per lease whether an
	// Acquire by another owner found the key held while the lease owned it.
	// A nil contended slice means no lease saw contention.
	ReleaseContended(ctx context.Context, leases []Lease) (errs []error, contended []bool)
}

// InstantReleaser is an optional interface of a Backend whose store lives
// in the process, such as the memory backend, so that a release waits for
// nothing but a mutex.
//
// Unlock calls TryRelease in line, with the Manager's mutex held, instead of
// handing the release to the scheduler: when Unlock returns, every Manager
// of the store finds the key free, as a sync.Mutex user would expect. (On a
// networked backend the release is sent by the scheduler, usually within a
// round trip of the Unlock, and another process may find the key held in
// that moment.) TryRelease must not block, nor call back into the Manager.
//
// The Manager uses TryRelease only when InstantBackend returns the very
// Backend it was given: through a wrapper that embeds an InstantReleaser,
// to delay, fail or count releases, Unlock's releases go to the scheduler,
// which sends them with the wrapper's methods. (Those may still be
// promoted from the embedded backend: a wrapper of the memory backend that
// overrides Release alone must hide or override ReleaseContended and
// Relock too, as for any optional interface. A wrapper that wants in-line
// releases, and has TryRelease do what its Release does, returns itself
// from InstantBackend.)
type InstantReleaser interface {
	// TryRelease releases lease as Release does (owner-checked: a lease no
	// longer owned is left alone, and counts as released). It reports
	// released false, doing nothing, when it would have to wait (the store
	// is slow, unavailable or closed): the release then goes to the
	// scheduler as on any backend. wanted reports, as ContentionReporter
	// does, whether another owner tried to take the key while the lease
	// owned it.
	TryRelease(lease Lease) (released, wanted bool)
	// InstantBackend returns the Backend whose TryRelease this is: the
	// receiver itself.
	InstantBackend() Backend
}

// Relocker is an optional interface of a Backend that can release a lease
// and acquire its key again in one round trip. The Manager uses it when a
// Lock takes again a key whose release by this Manager is still pending:
// without it, that costs a Release and an Acquire.
type Relocker interface {
	// Relock releases old (owner-checked, as Release) and then, unless
	// another owner wanted the key while old held it (see
	// ContentionReporter), acquires req as Acquire would, in one step. When
	// the key was wanted it is released but not acquired, so that a waiting
	// owner gets it: wanted is true and err nil. Otherwise it returns what
	// Acquire would. If err matches ErrUnavailable, neither step is known to
	// have happened.
	//
	// A WaiterQueue backend that gives the key up to queued waiters queues
	// req.Waiter behind them and reports queued true: the Manager then
	// waits to be told its turn. When the key was only wanted by owners
	// that do not queue (a refused TryLock), queued is false and the
	// Manager tries again after a short pause, as it does after a contended
	// release: nobody would tell it when the key is free. A refused Relock
	// (err matching ErrHeld) that queued req.Waiter, as a refused Acquire
	// does, reports queued true too; one that did not (false) leaves the
	// waiter to queue with its next attempt.
	Relock(ctx context.Context, old Lease, req AcquireRequest) (lease Lease, wanted, queued bool, err error)
}

// RoundTripNotifier is an optional interface of a Backend whose calls from
// many goroutines share round trips (group commit, as the Redis backend's
// pipelines do).
//
// The Manager uses it to spare its scheduler a wake-up per Unlock. While a
// round trip is in flight, the release an Unlock queues is looked at again
// only once that round trip has been answered; a goroutine that locks the
// same key again meanwhile, as loops do, has by then taken the release to
// send it with its acquire in one request (Relocker), and the scheduler is
// not woken at all. A release nobody took is sent then: later than it would
// have been by what remained of that round trip (bounded by the backend's
// timeouts).
type RoundTripNotifier interface {
	// AfterRoundTrip reports whether the backend has a round trip in flight
	// or about to leave. If so it calls f once, when that round trip has
	// been answered or has failed (or, should none leave, soon), from
	// another goroutine than the caller's and with none of its own locks
	// held; it must not call f before AfterRoundTrip has returned (the
	// Manager calls it with its mutex held). It reports false, and never
	// calls f, when it has nothing in flight. f returns quickly; it may take
	// the Manager's mutex briefly.
	AfterRoundTrip(f func()) bool
}

// WaiterQueue is an optional interface of a Backend that hands a released
// key to its waiters in arrival order. A refused Acquire with a Waiter joins
// the key's queue (or keeps its place); a free key is refused to everyone but
// the queue's first live waiter. Queue entries lapse when their waiter stops
// retrying, so a dead process delays the key only briefly.
//
// A release grants the key to the first live waiter on the backend itself:
// it stores a lease whose Owner is GrantOwner(waiter, token) (with the
// waiter's Metadata, a new fencing token, and the waiter's TTL or less) and
// tells that waiter alone, with a Handoff carrying the token and TTL. The
// waiter then holds the key without another round trip. A waiter's Acquire
// (or Relock) that finds the key granted to it returns that lease, renewed
// for the request's TTL as if just taken, so a lost or late notification
// costs at most one retry. Leave releases a lease granted to a waiter that gave up.
//
// The Manager uses it to hand a contended key from one process to the next
// with one notification, instead of waking every waiting process to race
// for it.
//
// A backend that cannot grant on its own (redlock: one node's grant means
// nothing without a quorum) may only hint: a release tells the first live
// waiter with a zero Handoff, keeps the free key for it briefly at most,
// and the waiter takes the key with an Acquire. Such a backend orders its
// queue by waiter id (AcquireRequest.Waiter), not by arrival.
type WaiterQueue interface {
	// WatchWaiter is Watch for one waiter. Its channel receives a Handoff
	// with a non-zero Token when key is granted to waiter, and may receive
	// a zero Handoff as a hint to retry now (for example after a reconnect
	// that may have lost a notification, or a release nobody was queued
	// for). A waiter that is not queued learns of a release at its next
	// retry at the latest (its backoff, bounded by the holder's remaining
	// TTL), hint or not.
	WatchWaiter(key, waiter string) (turns <-chan Handoff, stop func())
	// Leave takes waiter out of key's queue, and releases the key if it was
	// granted to waiter: a Lock call that gave up.
	Leave(ctx context.Context, key, waiter string) error
}

// GrantOwner is the Owner of the lease a WaiterQueue backend grants to
// waiter with token. It differs per grant, as owners must differ per hold: a
// Lock call may be granted a key twice (when the first grant lapsed before
// it was received), and a retried release of the first lease must not
// delete the second.
func GrantOwner(waiter string, token uint64) string {
	return waiter + ":" + strconv.FormatUint(token, 10)
}

// Handoff is a WaiterQueue's message to one waiter.
type Handoff struct {
	// Token is the fencing token of the lease granted to the waiter (its
	// Owner is GrantOwner(waiter, Token)), or 0 when the message is only a
	// hint to retry.
	//
	// The grant happened after every Acquire of the waiter that the backend
	// refused with a HeldError.Fence below Token, so its lease lasts at
	// least TTL from the start of the latest such attempt. A grant whose
	// Token is not above the Fence of a later refusal is stale (it lapsed
	// before that refusal) and must be ignored.
	Token uint64
	// TTL is the granted lease's TTL. It may be shorter than the waiter
	// asked for (so that a waiter that died while queued holds the key up
	// only briefly); the Manager then renews the lease soon.
	TTL time.Duration
}

// DeleteNotifier is an optional interface of a Backend that sees, at
// little cost per key, every end of a key's lease on the server: a
// release, a lapse, a revocation, a deletion by hand (etcd: one watch on
// the Backend's prefix).
//
// The Manager registers a function when it is made and unregisters it at
// Close. When the lease of a key it holds is reported ended, it refreshes
// that hold at once instead of at its next refresh: a lease that the
// server ended early (an operator deleted the key; an etcd leader stalled
// past the TTL can revoke leases that other members renewed meanwhile,
// etcd-io/etcd#15247) then ends the hold (ErrLost) within a round trip,
// while the expiry channel would otherwise stay open up to a refresh
// interval after another owner could take the key. A report that comes
// while the key is being acquired is kept for the hold that the attempt
// may make. Reports may be late, repeated or spurious: each costs at most
// one refresh, and none a hold whose token shows it began after the end
// reported. Holds made WithoutRefresh are not refreshed, and keep their
// expiry channel open until their validity deadline.
type DeleteNotifier interface {
	// NotifyDeletes makes the backend call f(key, before) when it sees
	// leases of key (as in Lease.Key) end on the server: every lease of
	// key whose Token is less than before has ended. A backend whose
	// tokens are revisions passes the revision of the deletion (a lease
	// made after it has a larger token); one that cannot tell which
	// leases ended passes math.MaxUint64. Calls go on until stop is called.
	//
	// f is called from a goroutine of the backend's, never from within one
	// of the backend's methods and with none of its locks held; it returns
	// quickly (it may take the Manager's mutex briefly), and may still be
	// called, once, after stop has returned. A report may come late or not
	// at all (a watch that reconnects may miss deletions): the Manager's
	// refreshes remain the authority.
	NotifyDeletes(f func(key string, before uint64)) (stop func())
}

// BackendNamer is implemented by backends that have a short name ("memory",
// "redis", "redlock") for telemetry attributes (ctxlock.backend) and error
// messages. Backends without it are named "custom".
type BackendNamer interface {
	// BackendName returns the name; it is constant for a backend.
	BackendName() string
}

func backendName(b Backend) string {
	if n, ok := b.(BackendNamer); ok {
		return n.BackendName()
	}
	return "custom"
}
