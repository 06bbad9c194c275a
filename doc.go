// Package ctxlock is a context-first distributed lock library.
//
// A Manager makes Lock values on a Backend (in-memory, Redis, Redlock). Lock
// and TryLock return an expiry channel that closes when the hold ends, so
// code protected by a lock can select on it like on ctx.Done():
//
//	m := ctxlock.NewManager(memory.New()) // or goredis.New(redisClient)
//	defer m.Close(context.Background())
//
//	l := m.NewLock("orders/42", ctxlock.WithTTL(10*time.Second))
//	expired, err := l.Lock(ctx)
//	if err != nil {
//		return err // ctx ended, the Manager closed, or a permanent backend error
//	}
//	defer l.Unlock()
//	select {
//	case <-expired: // the hold is gone (l.Err() says why): stop touching the resource
//	case <-work():
//	}
//
// The channel closes at Unlock, at Close, when a refresh finds the lease
// gone, and, while the backend does not answer, before the lease could
// lapse there (Liveness B below). A lease that the backend itself loses
// (deleted by hand, evicted, lost in a failover) is noticed at the next
// refresh, up to the refresh interval (TTL/3 by default) later: in that
// window only fencing tokens (Lock.Token) protect the resource. A backend
// that sees such deletions (DeleteNotifier: etcd) makes the Manager
// refresh the hold at once, which narrows the window to about a round
// trip.
//
// # Guarantees
//
// Each guarantee is proven by a named test on every backend (see
// backends/locktest):
//
//   - Liveness A: a lock is always eventually released when the process
//     holding it crashes or exits. Leases have a TTL on the backend; a dead
//     holder stops refreshing them.
//   - Liveness B: a lock is always eventually released when its backend is
//     unavailable, and the holder's expiry channel closes BEFORE any other
//     owner can acquire it. A hold whose lease was requested at t0 with TTL d
//     is valid locally until t0 + d − (d·drift + 2ms), on the monotonic clock;
//     the server keeps the lease until at least t0 + d.
//   - Atomicity A: no two holders (processes, goroutines, Lock values) hold
//     the same key at once, as long as holders stop at their expiry channel.
//     Fencing tokens (Lock.Token) let the protected resource enforce it.
//   - Atomicity B: any call to Unlock always eventually releases the lock.
//     Unlock never blocks; the release is retried until the backend confirms
//     it or the lease has lapsed.
//
// # How it works
//
// Each Manager runs ONE scheduler goroutine (started with the first hold or
// queued release)
// that owns a heap of deadlines: refresh due, validity deadline, release
// retry. Backend I/O never runs on it: refreshes and releases go, batched,
// to at most WithWorkers workers, so a hung backend cannot delay an expiry.
// Nor do the user's tracer, meter and logger: no call ever makes them with
// the Manager's mutex held, and the scheduler leaves its records to another
// goroutine, so a slow exporter cannot delay an expiry either.
// All leases due within a quarter of their refresh interval share one Extend
// call, so 1,000 held locks cost a handful of round trips per interval.
//
// A blocked Lock waits in the caller's goroutine. Lock calls on one key in
// one Manager queue locally in FIFO order and only the head of the queue
// talks to the backend: it retries when the backend reports a release
// (Backend.Watch), when a local holder lets go, or after a jittered backoff
// that starts at the retry delay, doubles up to MaxRetryDelay and never
// sleeps past the holder's remaining TTL. It listens for releases only once
// it has found the key held: while attempts fail (the backend unreachable)
// it simply retries on the backoff, which failing releases of its own do
// not cut short. A Lock returns when its context ends; giving up its place
// in a WaiterQueue backend's queue then goes on in the background, and
// Close waits for it as for releases. (With 64 such leaves already running
// in the Manager, or once Close has begun, a Lock that gives up leaves in
// line, and returns up to its AcquireTimeout late.) A Lock that finds its own
// Manager's release of the key still pending performs it in line first
// (with a Relocker backend, in the same round trip as the new acquire).
// On an in-process store (InstantReleaser: the memory backend) Unlock
// releases in line, waiting for nothing but the store's mutex, so the key is
// free for every Manager of the store once Unlock returns; the scheduler
// takes the release only when the store is made slow or unavailable.
// Elsewhere an Unlock wakes the scheduler to send its release, except while a
// RoundTripNotifier backend has a round trip in flight: the release then
// waits for that round trip to be answered, and a goroutine that locks the
// same key again meanwhile, as loops do, takes it along with its acquire,
// so the scheduler is not woken at all. Either way a release goes out
// without waiting for a timer.
//
// Between processes, fairness comes from the backend: with a
// ContentionReporter a releaser that re-locks at once yields when others
// were refused meanwhile, and with a WaiterQueue (Redis) refused Lock calls
// queue on the server in arrival order and a release hands the key to the
// next one, which holds it without another round trip (see Handoff); a
// queued waiter retries only to keep its place. Redlock's queues only hint:
// a release tells the first waiter alone, which then acquires as usual. The hold of a hand-off is
// valid from the start of the waiter's last refused attempt, the latest
// instant known to precede the grant.
//
// # Decisions where the design is silent
//
//   - Unlock may be called from any goroutine, like sync.Mutex.Unlock; a
//     second Unlock of the same hold returns ErrNotHeld together with
//     ErrLockActionRequested.
//   - Err returns nil before the first hold and while held.
//   - Unlock's release is asynchronous (§1 of the design), except on an
//     in-process store (InstantReleaser: the memory backend), where it
//     waits for nothing and is made in line: there, once Unlock returns,
//     another Manager's TryLock of the key succeeds, as a sync.Mutex user
//     would expect. On a networked backend another process may find the
//     key held for about a round trip after Unlock returns.
//   - TryLock returns a transient backend fault as an error instead of
//     retrying; Lock retries such faults until ctx ends.
//   - Lock and TryLock with a context that is already done return its error
//     (matching context.Canceled or DeadlineExceeded) without an attempt, as
//     net/http and database/sql calls do: "at least one attempt" holds for
//     a live context.
//   - An expired hold (ErrExpired) is still released on the backend, so a
//     backend that was merely slow (a refresh reached it, its answer did
//     not) frees the key before the TTL; but only once the drift allowance
//     after the validity deadline has passed, when the lease would have
//     lapsed had no refresh reached the backend. That is the holder's time
//     to notice the closed channel before anyone can take the key: nobody,
//     in any process, gets it sooner than if the lease had lapsed (unless
//     the Manager is closed: Close sends such releases at once, as it
//     releases live holds). A lost hold (ErrLost) is released at once
//     (owner-checked).
//   - An attempt whose outcome is unknown (it timed out, or its context
//     ended, after its request may have left) is followed by an
//     owner-checked release of the lease it may have taken. Its request may
//     still reach the backend after that release found nothing (a delayed
//     packet on a connection the client has dropped) and take the key for
//     an owner nobody releases; so once confirmed, the release is sent
//     again after the lock's AcquireTimeout, then at doubling intervals,
//     until the lease would have lapsed anyway. Such a late request blocks
//     the key about as long as it was late, not a whole TTL. Owner ids are
//     unique per attempt, so a repeat never releases another hold. Repeats
//     are best effort, on the scheduler's workers: they are not pending
//     releases (Health, ctxlock.release.pending), Close sends each queued
//     one once more and schedules no further one, and attempts answered in
//     time have none.
//   - TryLock never yields: after an Unlock it takes the key again whenever
//     the backend lets it, even if other TryLock callers elsewhere were
//     refused meanwhile (they do not queue). Only Lock calls queue; with a
//     WaiterQueue backend (Redis) a release hands the key to a queued Lock
//     before any TryLock can take it. A leader that steps down and wants
//     another instance to take over should wait a round before its next
//     TryLock (see examples/leader).
//   - The Manager does not own the Backend: close Managers first, then the
//     Backend. Close is idempotent.
//   - Close and Health return when their ctx ends, as http.Server.Shutdown
//     does, even when backend calls are stuck (a frozen server, a client
//     that honours deadlines but not cancellation): those calls end in the
//     background within their own deadlines and the client's timeouts, and
//     Close's error says so. A Health check left running that way is the
//     Manager's: Close waits for it as for its workers. A closed Manager's
//     Health answers ErrClosed at once, without asking the backend.
//   - Owner ids are a random per-Manager prefix plus a sequence number:
//     unique per acquire attempt, so a late release of an old hold can never
//     release a newer one.
//   - Keys are opaque bytes up to MaxKeyLength; WithNamespace prefixes them.
//
// # Observability
//
// With WithTracerProvider and WithMeterProvider (or the otel globals) every
// Lock, TryLock, refresh batch and release batch is traced and measured; see
// the ctxlockotel package (folder otel/) for span and metric names. Without a
// configured provider instrumentation costs no allocation.
package ctxlock
