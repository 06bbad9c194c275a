// Package goredis is a ctxlock.Backend that stores leases in Redis through a
// go-redis v9 [redis.UniversalClient]: a standalone *redis.Client, a
// *redis.ClusterClient, or a Sentinel failover client.
//
// # Quick start
//
//	rdb := redis.NewClient(&redis.Options{
//		Addr:                  "localhost:6379",
//		ContextTimeoutEnabled: true, // let per-attempt timeouts bound network I/O
//	})
//	defer rdb.Close()
//
//	backend := goredis.New(rdb)
//	defer backend.Close() // after the Managers; does not close rdb
//
//	m := ctxlock.NewManager(backend, ctxlock.WithNamespace("myapp:"))
//	defer m.Close(context.Background())
//
//	lock := m.NewLock("nightly-report")
//	expired, err := lock.Lock(ctx)
//
// # Data layout
//
// A lock on the (full, namespaced) key K is stored in Redis at "{K}" (with
// WithKeyPrefix p: "{pK}"). The braces are a Cluster hash tag, so the lease
// and its fencing counter "{K}:fence" always live in the same hash slot and
// one Lua script can update both atomically. (The tag ends at the first '}':
// in Cluster mode a key that, with its prefix, starts with '}' would have
// an empty tag, and is refused with ctxlock.ErrInvalidKey.)
//
//   - "{K}" is a string whose value is the owner id of the current hold, or
//     owner + "\x00" + metadata when the lock was taken with
//     ctxlock.WithMetadata. It carries the lease TTL (PX). Extend and Release
//     check ownership by comparing the value with the owner, or its prefix
//     up to the NUL byte, so owner ids must not contain NUL (Acquire
//     rejects them). Operators can read the holder with GET "{K}".
//   - "{K}:fence" is an integer counter, incremented by every successful
//     acquire; its new value is the hold's fencing token. It has no TTL: a
//     counter that disappeared (FLUSHDB, or eviction under an allkeys-*
//     maxmemory policy) would restart the tokens, so do not let Redis evict
//     it (noeviction or volatile-* policies keep it). So every key ever
//     locked keeps its counter for good. With WithClockTokens(counterTTL) a
//     token is max(counter + 1, the server's clock in µs), about 1.8·10¹⁵,
//     stored back in the counter with PX counterTTL (refreshed at every
//     token; none when counterTTL ≤ 0): the counter of a key not locked for
//     counterTTL disappears, and the next token, from the clock, is still
//     above the earlier ones (as long as the clock does not step back by
//     more than the time since the key's last token). Every Backend on the
//     keys must then use the option: one without it would count an expired
//     counter up from 1.
//   - "{K}:wanted" is set (with the holder's remaining TTL) when an acquire
//     is refused: the holder's release reports the contention
//     (ctxlock.ContentionReporter), so a process that re-locks at once
//     yields instead of starving the others. Its value is "<inbox>
//     <waiter>" of the waiter that can take the key once it is free: the
//     first waiter of the refused caller's queue ("{K}:q" refuses the free
//     key to the others), or, with WithWaiterHints, the refused waiter
//     itself (the first of "{K}:hq" for a TryLock); "1" when there is none.
//     A release or relock that frees the key without handing it to a
//     waiter of its own queue tells that waiter to retry now ("0 0
//     <waiter>" on its inbox), which may queue in the other kind of queue
//     (see WithWaiterHints) or in none.
//   - "{K}:q" (a list) and "{K}:qd" (a hash of entries) are the waiter
//     queue (ctxlock.WaiterQueue): a refused acquire with a waiter id joins
//     the end of the list, or refreshes its entry: a deadline, and the
//     lease a release would grant it. A free key is refused to anyone but
//     the first live waiter, who is dropped when its deadline
//     (WithWaiterKeep) passes without a retry. Both expire on their own
//     when nobody waits.
//   - A release with waiters queued grants the key to the first live one
//     (hand-off): it stores a lease owned by "<waiter>:<token>"
//     (ctxlock.GrantOwner), with the next fencing token and a TTL of at
//     most WithWaiterKeep, and PUBLISHes "<token> <ttl ms> <waiter>" on the
//     waiter's inbox, a channel ("ctxlock:inbox:<random id>", after the
//     prefix p, see Backend.Inbox) that only the waiter's Backend
//     subscribes to. Its
//     Manager holds the key at once and renews the lease to its TTL with
//     its next refresh. A waiter whose notification is lost finds the lease
//     at its next retry. When nobody is queued the release publishes "{K}"
//     on the channel "{K}:released", which wakes every plain watcher.
//   - With WithWaiterHints (for backends over several servers, such as
//     redlock) nothing is granted, and the queue is "{K}:hq" and "{K}:hqd"
//     instead (Backends with and without hints never read each other's
//     queues), kept in the order of waiter ids. A release publishes
//     "0 0 <waiter>" (a hint) on the first live waiter's inbox and records
//     it in "{K}:hqd" under the field "\x00hint" ("<waiter> <until ms>");
//     the free key is refused to others until then. A waiter leaves the
//     queue as it takes the key.
//
// A contended hand-off therefore costs one release and one message: the
// next owner holds the key without a request of its own, and no process
// that is not next sends one. A Lock that re-takes a key its own release is
// still pending for sends relock.lua (release and acquire in one round trip,
// ctxlock.Relocker), which hands the key to the first waiter instead, and
// queues the caller behind them, when others wait: under contention each
// acquisition costs one request. A relock refused (the key held by another
// owner) queues the caller's waiter as a refused Acquire does (not with
// WithWaiterHints). A waiter whose process dies while queued
// keeps the key from others for at most WithWaiterKeep after its last
// retry, plus the TTL of a grant it received (also at most WithWaiterKeep).
//
// The scripts (acquire.lua, extend.lua, release.lua, relock.lua, leave.lua,
// requeue.lua)
// are embedded in the binary and run with EVALSHA, falling back to EVAL when
// the server's script cache lacks them (NOSCRIPT). An uncontended acquire,
// relock or release (no wanted mark, no queue) is four calls inside its
// script, made before the queue's helpers are even defined. Acquire is
// idempotent for the same owner: a retry of an attempt that did succeed gets
// the same token back.
// Extend and Release of many leases go out as one pipeline, which go-redis
// splits into one round trip per node in Cluster mode. Acquire and Relock
// calls of many goroutines are group-committed: while one pipeline of them
// is in flight (per master in Cluster mode), the calls that arrive queue up
// and leave together in the next one; a lone call leaves at once, and each
// caller still gives up when its own context or timeout ends. After a batch
// of several calls, the next waits up to 20µs for that many calls to be
// queued again (callers looping on Lock+Unlock come straight back), unless
// such waits have lately been in vain. While a batch is in flight the
// Backend tells the Manager when it has been answered
// (ctxlock.RoundTripNotifier), so that an Unlock does not wake the
// Manager's scheduler: the goroutine's next Lock of the key usually takes
// the release along first (outside Cluster mode, where lanes come and go).
// An Acquire or Relock whose caller gave up after it was sent still runs on
// the server, and may take a lease or queue a waiter there: Release, Leave,
// Requeue and Dequeue therefore first wait (within their ctx) for this
// Backend's Acquire and Relock calls on the same key that were queued or in
// flight when they were called, and a Release, Leave or Dequeue whose ctx
// ends while it waits runs again, in the background (Close waits for it),
// once those calls have been answered.
//
// # Errors
//
// Transport faults (timeouts, refused or reset connections, EOF, pool
// timeouts) and server replies that mean "not now" (LOADING, READONLY,
// MOVED, ASK, CLUSTERDOWN, TRYAGAIN, MASTERDOWN, BUSY, NOREPLICAS, and OOM
// under a noeviction policy) are returned wrapped with ctxlock.Unavailable,
// so the Manager retries them, as is ErrNotReplicated (WithReplicaAcks).
// Everything else — WRONGTYPE (a lock key that holds something else), ACL
// errors, unexpected replies, a closed client, a fencing counter at 2^53
// (the scripts' numbers are doubles: tokens past it would repeat) — is a
// permanent error naming the key. An acquire whose reply is garbage gives
// back the lease its script may have stored.
//
// # Redis ACL
//
// A client that logs in as an ACL user (Username, Password) needs the
// scripts' commands, the commands the scripts call, the subscription's,
// every key in braces, and two kinds of channels: the keys' release
// channels and the Backends' inboxes. The least it can do with:
//
//	ACL SETUSER locker on >secret resetkeys ~{* resetchannels &{*}:released &*ctxlock:inbox:*
//	    -@all +evalsha +eval +publish +subscribe +unsubscribe +ping
//	    +get +set +exists +incr +pexpire +del +pttl +time
//	    +lpop +lindex +llen +lrem +rpush +lpush +linsert +hget +hset +hdel
//
// (TestConformanceMinimalACL runs the conformance suite as that user).
// Add +wait for WithReplicaAcks; +psubscribe +punsubscribe and the
// channel &__keyevent@*__:expired for WithExpiryNotifications; in Cluster
// mode +command +cluster|info +cluster|slots +cluster|shards (go-redis's
// command table and slot map, and Health). Redis 7 gives a new user no
// channels unless acl-pubsub-default is allchannels: without them locking
// works, but every release fails with a permanent error ("can't publish to
// the channel", after the lease was deleted or handed over, so the key is
// free or taken up anyway), waiters only poll, and Health reports the
// refused subscription. A missing command or key fails the calls that need
// it with a permanent error (NOPERM).
//
// # Wake-ups
//
// Watch and WatchWaiter share one subscription per Backend (in Cluster mode
// one per master, see Redis Cluster): the first of them starts it, each
// key's channel is subscribed while it has plain watchers, the Backend's
// inbox while it has waiters (channels linger 30s after their last watcher),
// and one goroutine reads messages and signals the watchers' channels
// without blocking; a hand-off replaces a pending hint, so it is never lost
// behind one. When the subscription has been silent for
// WithHealthCheckInterval it pings the server or, while waiters listen on
// the inbox, publishes a probe to the inbox through the client, which proves
// that it hears what is published where the client writes; with no answer by
// the next interval it reconnects. A SUBSCRIBE or UNSUBSCRIBE that fails is
// an outage too: it is sent again after a pause (backing off), and so is a
// SUBSCRIBE the server refuses (NOPERM, for an ACL user without the
// channels), which Health reports as a condition until a subscription is
// confirmed. After a reconnect or such an outage every watcher is woken,
// since a release may have been missed; likewise a watcher whose Watch or
// WatchWaiter returned before the server confirmed its subscription
// (WithSubscribeWait) is hinted once the confirmation comes. Watchers of a
// lease that lapses (TTL expiry rather than release) are woken only with
// WithExpiryNotifications and notify-keyspace-events configured on the
// server; otherwise the Manager retries at the holder's remaining TTL.
// Queued waiters are woken by their hand-off only: a lease that lapses with
// waiters queued goes to the first of them at its next retry (at the
// holder's remaining TTL, or within ctxlock.MaxRetryDelay).
//
// # Redis Cluster
//
// Pass a *redis.ClusterClient. Lock keys are spread over the slots by their
// hash tag. Wake-ups use classic PUBLISH/SUBSCRIBE, which Redis Cluster
// relays to subscribers on every node over the cluster bus. The relay is
// slow: Redis 7.0 does not disable Nagle's algorithm on the bus connections
// a node opens (strace: no TCP_NODELAY after the connect), so when messages
// follow each other on one node-to-node link (two hot keys on one master,
// say) each can wait for the peer's delayed ACK, about 40ms
// (redis/redis#11869, valkey-io/valkey#1758). With one subscription on one
// master, a stress run on a 3-master Cluster with both contended keys on
// another master saw most hand-offs take 20–100ms instead of under 10ms, and
// took 13–16s instead of 2–3s.
//
// So a Backend subscribes on each master whose keys it watches: Watch and
// WatchWaiter go to the subscription of the key's master in the client's
// slot map (made on first use, through go-redis's client for that node, so
// that it reconnects to that node only), which subscribes the key's channel,
// or the inbox while it has waiters. Releases and hand-offs are then heard
// on the node that publishes them (TestClusterSubscriptionOnKeysMaster).
// Other subscriptions of the Backend that have the inbox hear a relayed copy
// of each hand-off and ignore it (the waiter is not theirs). A key that
// moves to another master (resharding) is still heard over the bus by its
// watchers until they watch again, which goes to the new master. A
// subscription whose master dies is down (its watchers poll, and Health
// reports it with the master's address) until the slot map names another
// master for its slots: it then subscribes there, on the replica that took
// over (TestClusterFailoverSubscriptionRecovers). A subscription with no
// channel left (after they lingered) is closed. If the slot map cannot be
// had, Watch uses a subscription through the ClusterClient, on whichever
// master go-redis picks. Sharded pub/sub (SPUBLISH/SSUBSCRIBE) is not used:
// its messages are not relayed at all, so a watcher on the wrong node (a
// slot that just moved) would hear nothing. Health PINGs every master and
// checks cluster_state.
//
// While a slot migrates to another master (resharding), acquires and
// releases of its keys are mostly refused with TRYAGAIN until the migration
// ends: their scripts name five keys of the slot, some of which do not
// exist, and Redis runs a multi-key command on a migrating slot only if all
// its keys are on one side. A script that does run there is stopped by any
// command of it on a key that is no longer on the node ("non local key"),
// after the commands before it took effect; the scripts never delete a key
// and write it again, so a release still hands the key to the next waiter,
// and what remains (a waiter dropped as dead emptying the queue) only costs
// a waiter its place. The Manager retries all of these (a release until it
// is confirmed or its lease lapsed). Refreshes name one key and go on,
// following the key (ASK). TestClusterReshardingUnderContention moves a
// contended key's slot back and forth six times, slowly, with no overlap
// and no failed Lock; TestScriptsOnMigratingSlot runs the hand-overs on a
// migrating slot.
//
// When a master dies and its replica takes over, the Backend has the client
// reload its slot map on every transient fault (go-redis does it in the
// background, at most every 200ms), and so does the subscription when it
// loses its connection. go-redis alone reloads it only on MOVED or READONLY
// replies or every ClusterStateReloadInterval (60s by default), and nothing
// sent to a dead master comes back MOVED: the keys of its slots could be
// neither locked nor refreshed for up to a minute. A hold whose lease had
// reached the replica is refreshed on it once it is promoted, if the
// failover (cluster-node-timeout plus the election: a few seconds) fits in
// the two thirds of the TTL left after the hold's last refresh.
//
// # Redis Sentinel
//
// Pass a failover client (redis.NewFailoverClient): it asks Sentinel for
// the master and moves to the new one when Sentinel announces a failover.
// The conformance suite and failovers run against real Sentinel in this
// package's tests, which show:
//
//   - A hold whose lease had reached a replica outlives the death of its
//     master: its refreshes fail until Sentinel promotes the replica, then
//     go on there. The failover (Sentinel's down-after-milliseconds, a
//     random delay of up to a second, the promotion, the client's switch)
//     must fit in what is left of the lease after its last refresh, two
//     thirds of the TTL at the least, or the hold expires first, with
//     ErrExpired.
//   - A planned failover (SENTINEL FAILOVER), or a partition, leaves the old
//     master running and taking writes until Sentinel turns it into a
//     replica, up to about 10s later, and each client switches only when
//     its Sentinel tells it. A Lock in that window can take a lease on the
//     old master that then vanishes: the hold ends with ErrLost at its next
//     refresh, and someone else may have taken the key on the new master
//     meanwhile. Configure the servers with min-replicas-to-write 1 and run
//     at least two replicas (so that the new master keeps one): the old
//     master then refuses writes as soon as its replicas have left it
//     (NOREPLICAS, which the Manager retries), and the Lock lands on the
//     new master. That narrows the window but does not close it: until
//     Sentinel has moved it, the replica the new master did not come from
//     still follows the old master, which goes on taking writes that the
//     replica acknowledges (WithReplicaAcks too) and then drops as it
//     resyncs from the new master. Exclusion and increasing tokens are not
//     promised for holds alive during a planned failover: in
//     TestChaosSentinel's long runs (2 minutes, 2-3 planned failovers
//     each) each run saw one such hold overlap another (103ms) or a token
//     go backwards. Holds through a master's death or freeze are checked
//     there and kept exclusion. Stop locking, or accept the risk, around a
//     SENTINEL FAILOVER.
//
// After a planned failover the subscription is still on the demoted
// master, alive but deaf to the new master's releases until Sentinel makes
// it a replica. Meanwhile waiters miss their hand-off messages and find the
// key granted to them when they retry on their backoff (within
// ctxlock.MaxRetryDelay once their client has switched): in
// TestSentinelPlannedFailoverWaiterGetsKey, 1-2s after the release instead
// of about a millisecond. The subscription's health check (see Wake-ups)
// notices within two health-check intervals and reconnects, to the new
// master (TestSubscriptionFollowsPlannedFailover).
//
// The locks are as safe as a single Redis master: with asynchronous
// replication a failover can lose a lease that was just acquired, or its
// last refresh, so that the lease lapses on the new master before its
// holder's expiry channel closes, and the fencing counter can go back if
// the promoted replica had not yet received its latest value.
// WithReplicaAcks closes most of that gap: a lease counts as taken or
// refreshed only once replicas have acknowledged it (WAIT), at the price of
// a replica round trip per acquire and refresh batch, and of no locking
// while too few replicas answer (TestReplicaAcks, TestReplicaAcksManager).
// Use fencing tokens against a store that checks them, or the redlock
// backend, when the rest matters.
package goredis
