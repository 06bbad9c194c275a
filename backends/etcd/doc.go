// Package etcd is a ctxlock.Backend on an etcd v3 cluster, through a
// [clientv3.Client].
//
// It is a module of its own (github.com/ctxlock/ctxlock/backends/etcd), so
// that etcd's client and gRPC enter only the builds that use it. It uses
// go.etcd.io/etcd/client/v3 v3.6, and its tests run against etcd 3.4.23 and
// 3.6.16 servers.
//
// # Quick start
//
//	client, err := clientv3.New(clientv3.Config{
//		Endpoints:   []string{"etcd-1:2379", "etcd-2:2379", "etcd-3:2379"},
//		DialTimeout: 5 * time.Second,
//	})
//	if err != nil { ... }
//	defer client.Close() // after the Backend: the caller owns the client
//
//	backend, err := etcd.New(client)
//	if err != nil { ... }
//	defer backend.Close() // after the Managers; does not close the client
//
//	m := ctxlock.NewManager(backend, ctxlock.WithNamespace("myapp:"))
//	defer m.Close(context.Background())
//
//	lock := m.NewLock("nightly-report", ctxlock.WithTTL(10*time.Second))
//	expired, err := lock.Lock(ctx)
//
// Every process that locks the same keys must use the same prefix
// (WithPrefix).
//
// # Keys and leases
//
// A hold is one etcd key and one etcd lease:
//
//   - <prefix>k/<key> (the key as the Manager passes it, namespace
//     included) holds the owner's id, attached to the hold's lease;
//   - <prefix>m/<key> holds the holder's ctxlock.WithMetadata text, when
//     it has some, attached to the same lease;
//   - the lease's ID is derived from the owner (63 bits of its SHA-256),
//     so that the Backend finds a hold's lease from the owner alone, also
//     for an attempt whose answer was lost. Owners are unique per attempt;
//     should two hash to the same ID while both are live, etcd refuses the
//     second grant and that attempt fails with an error (it never shares a
//     lease).
//
// "Who holds what" for an operator:
//
//	etcdctl get --prefix ctxlock/k/       # keys and owners
//	etcdctl get --prefix ctxlock/m/       # metadata
//	etcdctl lease timetolive <lease-id>   # the lease of a key (etcdctl get -w json shows it)
//
// Nothing stays behind: a released or lapsed hold leaves no key and no
// lease, so a service that locks many distinct keys ("order:123") does not
// grow the keyspace (compaction, as for any etcd workload, reclaims the
// history).
//
// # Fencing tokens
//
// A hold's token is the revision of the transaction that created its key:
// etcd's revision counter is cluster-wide, strictly increasing and
// durable, so tokens increase per key (and across keys) across releases,
// lapses, restarts and leader changes, with nothing stored per key.
//
// # TTLs and time
//
// etcd leases count whole seconds: a TTL is rounded up to the next second,
// and etcd raises it to its minimum lease TTL, which it derives from its
// election timeout (1.5 times it, in whole seconds). Leases expire on
// the leader's clock; a new leader renews every lease on election (they
// last longer, never shorter). A lease thus lasts at least the TTL the
// Manager measures its validity window against, and the window closes
// first; the price of the rounding is that a crashed holder's key is free
// only when the rounded lease lapses (and etcd revokes expired leases in
// batches, at most 1,000 a second by default). TTLs under a second work,
// but gain nothing over one second.
//
// The Manager's window relies on etcd keeping a lease for its TTL. etcd
// releases before 3.5.3 could renew a lease at a member that had just lost
// its leadership (etcd-io/etcd#13675, fixed by a linearizable renewal), and
// a leader stalled past a lease's TTL (a slow disk, a paused VM or
// process) can revoke that lease when it resumes, though another member
// renewed it meanwhile (etcd-io/etcd#15247). Releases with etcd's fix
// (etcd-io/etcd#16822, 2024) check their leadership first, but skip the
// check when their ticker has just fired, which it does at once after a
// pause: our tests saw etcd 3.4.23 (without the fix) and 3.6.16 (with it)
// alike revoke a live lease the moment a leader frozen (SIGSTOP) for 3s
// resumed, in about one run in five. The key is then
// deleted, and another owner can take it, before the holder's expiry
// channel closes. The Backend narrows that window: its watch reports the
// deletion and its revision (ctxlock.DeleteNotifier), and the Manager
// refreshes a hold whose token (the revision that created the key) is
// smaller at once, which ends it with ctxlock.ErrLost a round trip later,
// rather than at its next refresh (TestDeleteByHandEndsHold), even when
// the deletion came while the key was being acquired. It cannot close the
// window: a waiter that hears of the deletion first may take the key
// before the holder's refresh is answered. Prefer etcd 3.5.3 or later,
// and pass the fencing token to the resource, as with any store whose
// leases the server may end early.
//
// Extend renews leases with etcd's keep-alive, which renews a lease for
// the TTL it was granted with: the Manager always extends with the TTL it
// acquired with. An Extend asking for a longer TTL reports
// ctxlock.ErrInvalidOption for the lease (the lease is still renewed for
// its own TTL).
//
// # Round trips
//
//   - Acquire: LeaseGrant, then one transaction (the key is put with the
//     lease if it does not exist, else read). Two round trips. A refusal
//     revokes the attempt's lease and asks the holder's lease for its
//     remaining TTL (ctxlock.HeldError.Remaining), in parallel: a third.
//   - Extend: keep-alives on the Backend's LeaseKeepAlive streams (kept
//     open, up to 4; a batch of more than 128 leases is split over several,
//     since a member that is not the leader forwards a stream's renewals to
//     the leader one at a time), while one read-only transaction per 128
//     keys (etcd's default --max-txn-ops) checks that each key is still
//     held by its owner with its lease: one round trip, in parallel. A
//     lease that is gone, or whose key is gone or held by another owner, is
//     lost (ctxlock.ErrLost). The streams stay open because clientv3
//     authenticates again for every stream it opens (with etcd
//     authentication on, a bcrypt check and a Raft proposal on the server);
//     a call cut off by its context takes its stream down, and the next
//     call opens another.
//   - Release: LeaseRevoke of each hold's lease (in parallel, at most 64
//     in flight per batch), which deletes its keys. A lease that is gone is
//     released either way.
//
// Every call is bounded by its context, and one attempt by less: Acquire
// by AcquireRequest.Timeout, Extend by a quarter of its TTL, Release by
// 1s. Within an Extend attempt, keep-alives or a read not answered a
// twelfth of the TTL after they left are sent again (hedged, up to 3
// sends; a hedge's keep-alives go on streams of their own, and results are
// kept per lease, from whichever send answered), and the client's
// round-robin balancer sends them to the next member. On a cluster whose
// reads take longer than that, the delay is twice the Backend's smoothed
// round trip of the reads answered, at most an eighth of the TTL, so that
// a cluster far away is not hedged on every refresh
// (TestHedgeDelayFollowsRoundTrip). A member that stops answering
// (frozen, or cut off while its connection still looks up) thus costs a
// hedge or a retry, which go to another member, not the hold: a frozen
// follower of three ends no hold (TestHoldSurvivesOneFrozenMember; a
// frozen leader can, see above). Give the client keep-alive pings
// (clientv3.Config.DialKeepAliveTime and DialKeepAliveTimeout) so that it
// stops sending to such a member at all. When no member can be reached,
// gRPC waits longer and longer between connection attempts (from 1s up to
// 2 minutes); the Backend's calls cut that wait short, at most once a
// second, so that a Manager locks again about a second after the cluster
// is back, however long it was away (TestRedialAfterOutage).
//
// gRPC calls that time out have an unknown outcome and report
// ctxlock.ErrUnavailable, so that the Manager releases the attempt. Such
// an attempt can never take the key after its release: the release
// revokes the attempt's lease, and etcd refuses to put a key with a lease
// that does not exist (a grant that lands after the revoke makes a lease
// with no key, which the Manager's repeated releases revoke too).
//
// # Notifications
//
// etcd deletes a key when its hold is released and when its lease lapses,
// and watchers see both. The first Watch starts one watch per Backend on
// <prefix>k/ (deletions only, on the client's connection) and one goroutine
// that wakes the watchers of the deleted key. The etcd client resumes the
// watch by itself when its connection breaks, from the last revision it
// delivered. The Backend watches anew only when the client gives up on the
// watch (the member lost its leader: the watch requires one,
// clientv3.WithRequireLeader; or the history it needed was compacted away):
// it resumes after the last deletion it saw (or the revision it began at;
// after a compaction, at the compaction's revision, so that later
// deletions are still seen: TestNotifyDeletesAfterCompaction), and wakes
// every watcher once the new watch is in force, since a deletion may have
// gone unseen. Health
// reports such a watch while it is being re-established; waiters then fall
// back to their backoff. The watch stays until Close.
//
// Every Backend hears every deletion under its prefix, as every listener
// of a PostgreSQL channel hears every notification: where thousands of
// keys are released a second, give groups of processes that never share
// keys prefixes of their own.
//
// # Errors
//
// Faults whose outcome is unknown are transient and match
// ctxlock.ErrUnavailable, so that the Manager retries them: timeouts, an
// unreachable cluster, a member without a leader, gRPC codes Unavailable,
// DeadlineExceeded, ResourceExhausted (NOSPACE, too many requests),
// Aborted, Internal, Unknown and NotFound, and an auth token that expired
// or predates a change of users or roles (the client authenticates
// again). Requests etcd refuses as such are permanent and returned by Lock
// and TryLock: InvalidArgument (a key larger than the server's request
// limit), PermissionDenied and other Unauthenticated errors (with etcd
// authentication on, the client's user needs read and write permission on
// the keys under the prefix, and nothing else: etcdctl role
// grant-permission --prefix=true <role> readwrite ctxlock/),
// FailedPrecondition, and a closed client (at once: the Backend checks the
// client before each call). An acquire refused as such gives its lease
// back at once.
//
// # Not supported
//
// The Backend implements ctxlock.BackendNamer ("etcd") and
// ctxlock.DeleteNotifier, not ctxlock.WaiterQueue (waiters race for a released key; the Manager's local
// queue keeps one attempt per process), ctxlock.ContentionReporter,
// ctxlock.Relocker or ctxlock.RoundTripNotifier.
package etcd
