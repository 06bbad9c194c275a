// Package redlock is a ctxlock.Backend that holds a lock only while a quorum
// of N independent Redis masters agree: the Redlock algorithm, over go-redis
// v9 clients, one *goredis.Backend per node.
//
// # Quick start
//
//	var clients []redis.UniversalClient
//	for _, addr := range []string{"redis-a:6379", "redis-b:6379", "redis-c:6379"} {
//		clients = append(clients, redis.NewClient(&redis.Options{
//			Addr:                  addr,
//			ContextTimeoutEnabled: true, // let per-node timeouts bound network I/O
//			DialTimeout:           time.Second,
//			ReadTimeout:           time.Second,
//			WriteTimeout:          time.Second,
//		}))
//	}
//	backend, err := redlock.New(clients) // N ≥ 1; odd N ≥ 3 to survive failures
//	if err != nil { ... }
//	defer backend.Close() // after the Managers; does not close the clients
//
//	m := ctxlock.NewManager(backend, ctxlock.WithNamespace("myapp:"))
//	defer m.Close(context.Background())
//
//	lock := m.NewLock("nightly-report")
//	expired, err := lock.Lock(ctx)
//
// The nodes must be independent masters: not replicas of one another, not
// shards of one Cluster; New refuses a server passed twice (the same client,
// or two clients of one address), which would count twice in the quorum.
// Each node stores the lease, the fencing counter and
// the release channel exactly as the goredis package does (see its data
// layout).
//
// # Algorithm
//
// Acquire sends the goredis acquire script (SET NX PX and INCR of the key's
// fencing counter) to every node at once, each request bounded by a per-node
// timeout well under the TTL (WithTimeoutFactor, default TTL/10, and never
// more than the attempt's timeout, ctxlock.WithAcquireTimeout). It grants
// the lease as soon as a quorum (N/2+1) granted it, provided the validity
// left is positive:
//
//	validity = TTL − elapsed − (TTL×driftFactor + 2ms)
//
// with elapsed measured on the monotonic clock from before the first request
// to after the quorum's last reply (WithDriftFactor, default 0.01). The Manager then
// applies its own validity deadline (ctxlock.WithDriftFactor) to the hold.
// When the quorum is missed or the validity has passed, Acquire waits for
// every node (each bounded by its timeout) and releases the attempt
// (owner-checked) at once on every node that granted it or did not answer:
// it returns once the nodes that granted have answered their release; the
// releases on nodes that did not answer go on in the background (retried
// while they fail, see below; a Manager also releases the attempt again
// until that is confirmed). Every fan-out returns as soon as its outcome is
// decided; calls to slow nodes finish in the background, bounded by their
// timeouts, so a frozen minority of nodes costs no latency once a quorum
// answered. A node's release of a lease, and a waiter's leaving its queue,
// wait there for that node's acquires and relocks of the key that had
// started before it and are still running (see goredis.Backend.Release),
// so that a slow node does not take the key after its release and keep it
// for a TTL.
//
// Extend runs one pipeline per node for the whole batch, all nodes at once,
// and keeps a lease only while a quorum confirms it. A lease that can no
// longer reach a quorum is reported lost (ctxlock.ErrLost) and released on
// the nodes that still have it, and in the background on the nodes that did
// not answer (which may have extended it), so that a lock held on fewer
// than a quorum never lingers. A lease not confirmed because nodes did not answer is a
// transient fault: the Manager retries, and the hold's expiry channel closes
// at its validity deadline if no quorum confirms in time. Release runs one
// owner-checked pipeline per node, all at once, and succeeds once a quorum
// released.
//
// Every release sent in the background, or left to finish there (a node
// that had not answered when a quorum released), is sent again while it
// fails with a transient error: after 50ms, doubling to a second, for up
// to a minute, one pipeline per node for all of them, until Close, which
// sends what is still pending once more. Left alone such leases would stay
// on their nodes until their TTL: harmless one at a time (a minority), but
// two of different holds on two of three nodes would keep every owner from
// a quorum until they lapsed.
//
// The backend implements ctxlock.ContentionReporter and ctxlock.Relocker
// (and ctxlock.WaiterQueue, see Waiters).
// ReleaseContended reports a lease contended when any node saw another
// owner refused while the lease held it. Relock, which the Manager uses
// when a Lock takes again a key its own Unlock just released, sends the
// goredis relock script (release the old lease, take the key again) to
// every node at once: one fan-out instead of a release and an acquire. It
// grants exactly as Acquire does (same quorum, validity check and fencing
// token), unless a node yields because other owners wanted the key; the key
// is then released everywhere and left to them.
//
// # Waiters
//
// The backend implements ctxlock.WaiterQueue with queues that only hint
// (goredis.WithWaiterHints on every node). A Lock call's refused attempt
// queues its waiter on the nodes that refused it; a release (or a yielding
// relock) on a node tells that node's first live waiter, and no one else,
// that the key is free, and keeps it free for that waiter for a short
// window (goredis.DefaultHintWindow); WatchWaiter merges the nodes' hints.
// (With nobody queued there, a release tells the waiter the node's wanted
// mark names instead, such as one whose relock that node refused: a
// refused relock does not queue.) The waiter then acquires as always, on a quorum. No node grants the key on
// its own, since one node's grant means nothing, and nodes keeping the key
// for different waiters for long could leave no one with a quorum. So that
// every node has the same first waiter, the queues are ordered by waiter id
// (the Manager's ids sort by the start of their Lock calls), and an attempt
// that took the key on too few nodes gives it back there with
// goredis.Backend.Requeue, which puts its waiter back in its place: a
// contended hand-off costs one release (or relock) fan-out, one message per
// node to one process, and that process's acquire fan-out. A waiter leaves
// a node's queue as it takes the key there; once it holds the key on a
// quorum the backend dequeues it where it was refused (goredis.Backend.Dequeue,
// in the background); Leave takes it out everywhere. A
// waiter whose process died keeps its place for at most
// goredis.WithWaiterKeep after its last retry, and delays the key by at
// most one window per release meanwhile.
//
// Watch merges the wake-ups of every node's release subscription: a release
// published by any node wakes the waiters. It returns once a quorum of
// nodes confirmed the subscription; since a release reaches a quorum, one of
// its publishes reaches a confirmed subscription. WatchWaiter does the same
// for one waiter's hints.
//
// # Errors
//
// Every operation that misses its quorum says which node did what in a
// *QuorumError: for each failing node its index, address, NodeStatus
// (NodeTaken, NodeUnreachable, NodeFailed) and error, as a *NodeError.
// A QuorumError matches ctxlock.ErrUnavailable (errors.Is) exactly when
// unreachable nodes or slowness caused the miss, so the Manager retries;
// when other owners hold the key on too many nodes Acquire returns a
// *ctxlock.HeldError wrapping the QuorumError, whose Remaining is when
// enough holders expire for a quorum to be free. A Lock that waits until its
// context ends returns the context's error joined with the last fault, so
//
//	var qe *redlock.QuorumError
//	if errors.As(err, &qe) { log.Print(qe.Count(redlock.NodeUnreachable), " nodes down") }
//
// works on Lock's error. Health reports per-node conditions and fails when
// fewer than a quorum of nodes are healthy.
//
// # Fencing tokens
//
// Each node keeps its own counter per key, incremented by every grant on
// that node. The token of a hold is the largest counter among the nodes
// that granted it. Counters drift apart (an attempt granted by a minority
// still increments it), so after a grant the nodes whose counter lags are
// raised to the token (raise.lua, only when the counters differ), and a
// quorum of nodes must carry it for the grant to stand. Hence, for two holds
// A then B, some node in B's quorum carried a counter ≥ A's token before B's
// increment there, and B's token is greater than A's: tokens increase per
// key as long as no node loses its counters and the timing assumptions of
// Redlock hold (bounded clock drift, no process pause longer than the
// validity). That is the whole guarantee.
//
// What it does not guarantee: a node that restarts without persistence
// comes back with empty counters and no leases, so a majority made of
// restarted and surviving nodes can grant the key again while the old hold
// is still valid, and issue tokens no greater than earlier ones. A single
// node losing its counters is enough, even while a majority keep theirs:
// A's token may be carried by A's quorum only (a node unreachable then
// never saw it), and if the one node that B's quorum shares with A's is the
// one that lost its counters, B's token can be smaller than A's, after A
// released the key. The test
// servers, like many deployments, run without persistence. To keep counters
// (and leases) across restarts run every node with appendonly yes and
// appendfsync always, or delay a restarted node's return by more than the
// longest TTL; never let Redis evict the counters (maxmemory-policy
// noeviction or volatile-*). Counters are not replicated between nodes, so
// losing a node's disk loses its counters, and nothing here survives a
// majority of nodes losing theirs.
//
// The tokens (not the leases) can be made to survive node loss with
// WithNodeOptions(goredis.WithClockTokens(time.Hour)), on every Backend
// that locks the keys: each node's token is then max(its counter + 1, its
// clock in µs), so a node restarted empty, or one whose counter expired
// (the counters get the TTL given, raised ones included), issues tokens
// above every one it issued before. In the case above B's token is then
// above A's as long as the clock of the node the quorums share has passed
// A's token, which is some node's clock when A was granted: the nodes'
// clocks must agree within the time between A's grant and B's (keep them
// synchronised: NTP), and no clock may step back by more than the time
// since the key's last token (TestClockTokensWhenSharedNodeRestarts). It
// has a cost: the nodes' clocks differ, so the counters of a quorum nearly
// always differ, and each acquisition raises the lagging ones (one more
// round trip to them). The tokens are about 1.8·10¹⁵. A Backend without
// the option on the same keys counts an expired counter up from 1 again:
// unsafe. A restarted node's leases are lost as before, so mutual
// exclusion across a restart still needs persistence or the delay above.
//
// The Kleppmann/antirez debate: Martin Kleppmann ("How to do distributed
// locking", 2016) argued that Redlock is unsafe for correctness because it
// depends on timing — a process paused by GC, a slow network or a jumping
// clock can keep acting after its lease ended — and because it has no
// fencing token that the protected resource can check. Salvatore Sanfilippo
// ("Is Redlock safe?") answered that the algorithm measures elapsed time
// with a monotonic clock, that the validity check bounds network delays
// after the acquisition, that any lock with expiry (including ones built on
// consensus) has the same pause problem after it is granted, and that a
// random unique owner id can serve for compare-and-set at the resource.
// Both agree on the limits: a lease ends by time, so a paused holder may act
// after its end, and no lock service alone prevents that.
//
// What to do: use this backend when the lock guards efficiency (avoiding
// duplicate work) or when you need the lock to survive a minority of Redis
// nodes failing. When correctness depends on mutual exclusion, enforce it at
// the resource: send Lock.Token with every write and make the resource
// reject tokens lower than the highest it has seen (or compare-and-set on
// the owner) — and prefer a backend built on consensus with durable,
// linearizable counters, such as etcd (backends/etcd: revisions as
// tokens), or a relational database in one transaction with the data it
// protects (backends/postgres).
package redlock
