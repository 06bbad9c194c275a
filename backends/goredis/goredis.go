package goredis

import (
	"context"
	cryptorand "crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
)

var (
	//go:embed acquire.lua
	acquireSrc string
	//go:embed extend.lua
	extendSrc string
	//go:embed release.lua
	releaseSrc string
	//go:embed relock.lua
	relockSrc string
	//go:embed leave.lua
	leaveSrc string
	//go:embed requeue.lua
	requeueSrc string
	// queue.lua holds the waiter-queue helpers; the scripts that use them
	// are sent with it in place of their "--#queue.lua" line (EVAL scripts
	// cannot share functions).
	//go:embed queue.lua
	queueSrc string

	acquireScript = redis.NewScript(withQueue(acquireSrc))
	extendScript  = redis.NewScript(extendSrc)
	releaseScript = redis.NewScript(withQueue(releaseSrc))
	relockScript  = redis.NewScript(withQueue(relockSrc))
	leaveScript   = redis.NewScript(withQueue(leaveSrc))
	requeueScript = redis.NewScript(withQueue(requeueSrc))

	// The SHA1s of the scripts take runs, as EVALSHA arguments (see newCall).
	acquireSHA any = acquireScript.Hash()
	relockSHA  any = relockScript.Hash()
)

// withQueue returns src with queue.lua in place of its "--#queue.lua" line.
// The line comes after a script's fast path: Lua defines the helpers each
// time it runs past them, which costs the server more than a lock's
// uncontended path itself. (Only the marker is replaced, not its line end,
// which a checkout may have made "\r\n".)
func withQueue(src string) string {
	const include = "--#queue.lua"
	if strings.Count(src, include) != 1 {
		panic("goredis: a script must include queue.lua exactly once")
	}
	return strings.Replace(src, include, queueSrc, 1)
}

// Name is what BackendName returns.
const Name = "redis"

// DefaultHealthCheckInterval is how long the release subscription may stay
// silent before it is checked (a ping, or a probe published to the inbox);
// no answer makes it reconnect.
const DefaultHealthCheckInterval = 3 * time.Second

// DefaultSubscribeWait bounds how long Watch waits for the server to confirm
// a new channel subscription (only while the subscription is healthy).
const DefaultSubscribeWait = 500 * time.Millisecond

// DefaultWaiterKeep is how long a queued waiter keeps its place without
// retrying (see ctxlock.WaiterQueue). A Manager's waiter retries at least
// every ctxlock.MaxRetryDelay, so a live waiter never loses its place, and a
// waiter whose process died delays the key at most this long.
const DefaultWaiterKeep = 3 * time.Second

// Option configures a Backend.
type Option func(*options)

type options struct {
	prefix        string
	healthEvery   time.Duration
	subscribeWait time.Duration
	expiryEvents  bool
	waiterKeep    time.Duration
	hintWindow    time.Duration // WithWaiterHints, when > 0
	acks          replicaAcks   // WithReplicaAcks
	clockTokens   bool          // WithClockTokens
	counterTTL    time.Duration // WithClockTokens: the fence counter's TTL, when > 0
}

// WithClockTokens makes fencing tokens follow the server's clock, so that
// a key's fencing counter "{K}:fence" need not be kept for good: every
// script that issues a token (an acquire, a relock, the hand-off of a
// release or Leave to the first waiter) makes it
//
//	max(counter + 1, server clock in µs)   (TIME: seconds·10⁶ + µs)
//
// and stores it back in the counter, with a TTL of counterTTL (PX,
// refreshed at every token) when counterTTL > 0, so that the counters of
// keys no longer locked disappear: without it every key ever locked
// ("order:123") leaves a counter in Redis for good. With counterTTL ≤ 0 the
// counters are kept for good, as without the option, but still seeded from
// the clock.
//
// Tokens stay strictly increasing per key as long as the server's clock
// does not step back by more than the time since the key's last token: a
// token is never below the clock, so a counter that expired, or a server
// restarted empty (no persistence: see the package doc), goes on above
// every earlier token, where plain counters would start again at 1. Keep
// counterTTL well above the clock steps the servers may take, and above
// the lease TTLs: an hour or more. (A hold that Extend keeps past
// counterTTL outlives its counter; a refusal then reports the server's
// clock as the fencing counter, which no earlier token is above, so that a
// waiter still tells a stale grant from a new one.) Without persistence a
// restart also forgets the leases, as ever: only the tokens are safe.
//
// The tokens are large numbers (about 1.8·10¹⁵, µs since 1970), still
// exact: below 2^53 (Lua numbers are doubles) until the year 2255, and
// uint64 in Lease.Token. A resource that checks tokens compares them as
// before. In Redis Cluster each master reads its own clock, which is
// enough: a key's counter lives on one master. A failover (Cluster or
// Sentinel) hands the key to a server whose clock counts from then on: keep
// the servers' clocks synchronised (NTP). Replication and WithReplicaAcks
// are unaffected (scripts replicate their writes, not the TIME they read).
//
// Every Backend that locks the same keys must use the option: one without
// it (or an older version) increments an expired counter from 1, a token
// below the ones issued before — unsafe. Turning the option on for a live
// deployment is safe (tokens jump up to the clock); turning it off is safe
// only for counters that still exist (counterTTL ≤ 0, or keys used within
// counterTTL). The uncontended paths then run TIME and a SET of the
// counter besides the INCR: in the benchmark of an uncontended Lock+Unlock
// loop (bench/, -clocktokens) about 2µs more server CPU per lock (+19%) and
// 8% fewer locks per second. In the redlock backend (redlock.WithNodeOptions)
// the nodes' clocks differ, so the counters of a quorum nearly always
// differ and each acquisition raises the lagging ones (one more round trip
// to them, see the redlock package); raised counters get the same TTL.
func WithClockTokens(counterTTL time.Duration) Option {
	return func(o *options) { o.clockTokens, o.counterTTL = true, counterTTL }
}

// DefaultHintWindow is how long, with WithWaiterHints, a free key is kept
// for the waiter a release just told.
const DefaultHintWindow = 50 * time.Millisecond

// WithWaiterHints makes the waiter queue (ctxlock.WaiterQueue) only hint: a
// release tells the key's first live waiter that the key is free (a zero
// ctxlock.Handoff) instead of granting it the key, and keeps the free key
// for that waiter for window (DefaultHintWindow when window ≤ 0); after
// that the key goes to whoever asks first. Waiters queue in the byte order
// of their ids, not in the order they arrive (the Manager's waiter ids sort
// by the time their Lock call started), and a waiter leaves the queue when
// it takes the key, gives up (Leave, Dequeue), or stops retrying for
// WithWaiterKeep. One release still wakes one waiter, not every waiting
// process, and the process that released cannot take the key back before
// the waiter it told had the time to ask.
//
// It is for backends that combine several Redis servers (the redlock
// package sets it on every node), where one server's grant means nothing on
// its own: servers keeping a key for different first waiters for long could
// leave no one with a quorum. The window bounds that, and ordering by id
// gives every server the same first waiter. Such a backend gives back a
// lease its attempt took on too few servers with Requeue, which keeps the
// waiter's place. The hinting queue has keys of its own ("{K}:hq",
// "{K}:hqd"): Backends on the same keys with and without the option ignore
// each other's queues (waiters of one are not served in order with the
// other's), which keeps a rolling upgrade safe. They still hear of each
// other through the key's wanted mark: a release or relock that frees the
// key without handing it to a waiter of its own queue tells the waiter
// that the last refusal named, of either kind (the first waiter of the
// refused caller's queue; with hints the refused caller itself, or the
// first waiter for a TryLock), to retry at once, so a process
// of one kind that re-locks the key in a loop does not starve a waiter of
// the other. While waiters of one kind hand the key on among themselves,
// a waiter of the other kind waits until their queue runs dry.
func WithWaiterHints(window time.Duration) Option {
	return func(o *options) {
		if window <= 0 {
			window = DefaultHintWindow
		}
		o.hintWindow = window
	}
}

// WithWaiterKeep sets how long a queued waiter keeps its place without
// retrying (default DefaultWaiterKeep). It must exceed the waiters' longest
// backoff (ctxlock.MaxRetryDelay) by a round trip or more. It also bounds
// the TTL of a hand-off (the waiter's Manager renews it to the lock's TTL):
// the hold is valid from the waiter's last refused attempt, up to
// MaxRetryDelay earlier, so a keep close to MaxRetryDelay leaves a granted
// waiter little time to take the key up. Keep the default or more. A
// shorter keep is accepted (other callers of the Backend may retry more
// often than a Manager), but a Manager's queued waiters then lose their
// place between retries and queue again at the back: waiting is no longer
// first come, first served, and two waiters can refuse each other a free
// key (each retries after its own entry lapsed, while the other's is live,
// and queues at the back again) until their jittered retries part: seconds
// with a keep of a fraction of MaxRetryDelay. Mutual exclusion is kept.
// Values ≤ 0 keep the default.
func WithWaiterKeep(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.waiterKeep = d
		}
	}
}

// WithKeyPrefix puts prefix in front of every key the backend stores, inside
// the hash tag: a lock on "jobs" is stored at "{<prefix>jobs}". Use it to
// share one Redis between unrelated deployments (ctxlock.WithNamespace does
// the same at the Manager level).
func WithKeyPrefix(prefix string) Option { return func(o *options) { o.prefix = prefix } }

// WithHealthCheckInterval sets how long the release subscription may stay
// silent before the backend checks it (default DefaultHealthCheckInterval):
// it pings it or, while waiters listen on the inbox, publishes a probe to
// the inbox through the client. A ping or probe unanswered for another
// interval makes the backend drop the connection and subscribe again.
// Values ≤ 0 keep the default.
func WithHealthCheckInterval(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.healthEvery = d
		}
	}
}

// WithSubscribeWait bounds how long Watch waits for the server to confirm the
// subscription to a key's channel, so that a release right after Watch
// returns is not missed (default DefaultSubscribeWait). Watch never waits
// while the subscription is known to be down. 0 disables the wait. A
// watcher (Watch or WatchWaiter) that returned before the confirmation gets
// a wake-up (a hint) once it comes, since what was published meanwhile was
// lost to it.
func WithSubscribeWait(d time.Duration) Option {
	return func(o *options) {
		if d >= 0 {
			o.subscribeWait = d
		}
	}
}

// WithExpiryNotifications makes watchers wake up when a lease lapses on the
// server (TTL expiry), not only when it is released. The backend then also
// subscribes to the pattern "__keyevent@*__:expired", which Redis feeds only
// when its notify-keyspace-events setting includes "Ex" (for instance
// CONFIG SET notify-keyspace-events Ex); the backend never changes server
// configuration itself. Without it a waiter wakes at the holder's remaining
// TTL, which the Manager tracks anyway. In Cluster mode keyspace events are
// local to each node: each master's subscription (see the package
// documentation, Redis Cluster) subscribes the pattern there, and hears
// the expiry of the keys on it; a key that has just moved to another
// master is not heard until its watchers watch again.
func WithExpiryNotifications() Option { return func(o *options) { o.expiryEvents = true } }

// Backend is a ctxlock.Backend storing leases in Redis through a go-redis v9
// UniversalClient (*redis.Client, *redis.ClusterClient, or a Sentinel
// failover client). It is safe for concurrent use. See the package
// documentation for the data layout.
type Backend struct {
	client  redis.UniversalClient
	cluster *redis.ClusterClient // non-nil in Cluster mode
	opts    options
	inbox   string // the channel grants to this backend's waiters are published on
	// hub is the subscription outside Cluster mode. In Cluster mode it is
	// the fallback for a key whose master the slot map does not give.
	hub *hub
	// In Cluster mode the watchers of a key, plain and queued, go to the
	// hub of the key's master, subscribed there through go-redis's client
	// for that node (see hubFor).
	hubsMu sync.Mutex
	hubs   map[*redis.Client]*hub
	// moved: hubs taken out of hubs because they moved to another node
	// (hub.repin); they serve the watchers they have until idle.
	moved      []*hub
	hubsClosed bool           // by Close: watchers go to hub, closed too
	nextSweep  time.Time      // of idle hubs
	retiring   sync.WaitGroup // idle hubs being closed
	batch      *batcher       // group-commits Acquire and Relock

	// Script arguments that never change, converted to interfaces once:
	// each conversion of a string or a large int64 allocates.
	keepArg  any // opts.waiterKeep in ms
	inboxArg any // inbox
	// hintArgs is the scripts' last argument with WithWaiterHints (the
	// window in ms), else empty: the scripts then grant.
	hintArgs []any
	// tailArgs end the arguments of acquire.lua, relock.lua and
	// release.lua: hintArgs, or, with WithClockTokens, the hint window (""
	// without hints) and the counter TTL in ms (0: none); leaveArgs end
	// leave.lua's likewise (with an empty Dequeue flag between them).
	// Without WithClockTokens the scripts get exactly the arguments they
	// always had.
	tailArgs, leaveArgs []any
	suffixes            *scriptKeys // keySuffixes, or hintKeySuffixes
	// ttlArg is the last TTL (ms, int64) Acquire or Relock sent, as an
	// interface: a Manager's locks mostly share one TTL, so reusing it
	// spares an allocation per call. A different TTL just replaces it.
	ttlArg atomic.Value
}

var (
	_ ctxlock.Backend      = (*Backend)(nil)
	_ ctxlock.BackendNamer = (*Backend)(nil)
)

// New returns a Backend over client. The backend does not own the client:
// Close stops the backend's subscriptions but leaves the client open, and
// the caller closes the client after closing the backend.
//
// A nil client (or a nil *redis.Client, say) makes a Backend that is not
// usable, as is the zero Backend: its calls fail with an error matching
// ctxlock.ErrInvalidOption, Watch and WatchWaiter return a nil channel,
// and Close does nothing. A call given a nil context fails with an error
// matching ctxlock.ErrNilContext.
//
// New does no I/O. For per-attempt timeouts (ctxlock.WithAcquireTimeout) to
// bound network I/O, create the client with ContextTimeoutEnabled: true;
// otherwise go-redis bounds each call by its ReadTimeout and WriteTimeout.
// A client with no bound at all (ReadTimeout or WriteTimeout -1 without
// ContextTimeoutEnabled, or -2, with which go-redis sets no deadline, not
// even a context's) never gives up on a server that stops answering
// without closing the connection: Lock attempts still end at their
// timeout, but the pipeline carrying them goes on, and Close, which waits
// for it, blocks until the server answers or the connection breaks.
func New(client redis.UniversalClient, opts ...Option) *Backend {
	o := options{healthEvery: DefaultHealthCheckInterval, subscribeWait: DefaultSubscribeWait, waiterKeep: DefaultWaiterKeep}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if isNilClient(client) {
		client = nil // a typed nil would pass b.client == nil checks, then panic
	}
	b := &Backend{client: client, opts: o}
	b.cluster, _ = client.(*redis.ClusterClient)
	// The scripts store the inbox in queue entries between spaces: no
	// white space in it, whatever the prefix.
	b.inbox = strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return '_'
		}
		return r
	}, o.prefix) + inboxPrefix + randomID()
	b.keepArg, b.inboxArg = o.waiterKeep.Milliseconds(), b.inbox
	b.suffixes = &keySuffixes
	if o.hintWindow > 0 {
		ms, _ := ttlMillis(o.hintWindow)
		b.hintArgs = []any{ms}
		b.suffixes = &hintKeySuffixes
	}
	b.tailArgs, b.leaveArgs = b.hintArgs, b.hintArgs
	if o.clockTokens {
		var hints, ttl any = "", int64(0)
		if len(b.hintArgs) > 0 {
			hints = b.hintArgs[0]
		}
		if o.counterTTL > 0 {
			ms, _ := ttlMillis(o.counterTTL)
			ttl = ms
		}
		b.tailArgs, b.leaveArgs = []any{hints, ttl}, []any{hints, "", ttl}
	}
	b.hub = b.newHub(client, "")
	b.batch = newBatcher(client)
	b.batch.acks = o.acks
	return b
}

// newHub makes a hub subscribing through client; when client is a Cluster
// node's, slotKey is a key of its slots (see hub.repin).
func (b *Backend) newHub(client redis.UniversalClient, slotKey string) *hub {
	pattern := ""
	if b.opts.expiryEvents {
		pattern = expiredPattern
	}
	h := newHub(client, b.inbox, pattern, b.opts.healthEvery, b.opts.subscribeWait)
	h.grantsAsHints = b.opts.acks.n > 0
	h.cluster = b.cluster
	if node, ok := client.(*redis.Client); ok && b.cluster != nil {
		h.addr, h.slotKey = node.Options().Addr, slotKey
	}
	return h
}

// hubFor returns the hub for the watchers of lockKey: outside Cluster mode
// the Backend's one hub; in Cluster mode that of the key's master in the
// client's slot map, made on first use.
//
// Redis Cluster relays every PUBLISH to every node over the cluster bus,
// so one subscription anywhere would hear every key; but Redis 7.0 does
// not set TCP_NODELAY on the bus connections it opens, and messages that
// follow each other on one link wait for delayed ACKs (tens of ms). A
// subscription on the key's master hears its releases and hand-offs
// locally. The hub subscribes through go-redis's client for that node, so
// that its reconnects stay there (a ClusterClient's PubSub reconnects to
// the master of one of its channels, whichever). A key that moves to
// another master (resharding) is still heard, relayed, until its watchers
// come back, which go to the new master. A hub whose connection fails
// moves to the master the reloaded slot map names for its first key, if
// another (see hub.repin): after a failover, the replica that took over.
// When the slot map cannot be had, the watchers go to the fallback hub, on
// the ClusterClient.
func (b *Backend) hubFor(lockKey string) *hub {
	if b.cluster == nil {
		return b.hub
	}
	// No I/O unless the client has no slot map yet.
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.healthEvery)
	node, err := b.cluster.MasterForKey(ctx, lockKey)
	cancel()
	b.hubsMu.Lock()
	defer b.hubsMu.Unlock()
	b.sweepLocked()
	if err != nil || b.hubsClosed {
		return b.hub
	}
	h := b.hubs[node]
	if h != nil && !h.on(node) {
		// h moved to another master since (repin: its first key's slot is
		// served there now, after a resharding, or node was failed over
		// and has come back as master). It keeps its watchers, but node's
		// new ones get a hub on node: on h they would be heard relayed over
		// the cluster bus only, for as long as h is kept busy.
		delete(b.hubs, node)
		b.moved = append(b.moved, h)
		h = nil
	}
	if h == nil {
		if b.hubs == nil {
			b.hubs = make(map[*redis.Client]*hub)
		}
		h = b.newHub(node, lockKey)
		b.hubs[node] = h
	}
	return h
}

// sweepLocked closes, at most once a second, the hubs that have no channel
// left (all lingered out): those of masters whose keys are no longer
// watched, dead masters' included. Their goroutines stop in the
// background; Close waits for them.
func (b *Backend) sweepLocked() {
	now := time.Now()
	if now.Before(b.nextSweep) {
		return
	}
	b.nextSweep = now.Add(time.Second)
	retire := func(h *hub) {
		b.retiring.Add(1)
		go func() {
			defer b.retiring.Done()
			h.join()
		}()
	}
	for node, h := range b.hubs {
		if h.stop(true) {
			delete(b.hubs, node)
			retire(h)
		}
	}
	b.moved = slices.DeleteFunc(b.moved, func(h *hub) bool {
		if h.stop(true) {
			retire(h)
			return true
		}
		return false
	})
}

// allHubs returns the hubs: the Backend's, and in Cluster mode the
// masters'.
func (b *Backend) allHubs() []*hub {
	b.hubsMu.Lock()
	defer b.hubsMu.Unlock()
	hs := append([]*hub{b.hub}, b.moved...)
	for _, h := range b.hubs {
		hs = append(hs, h)
	}
	return hs
}

// wake wakes this Backend's plain watchers of channel, whichever hub they
// are on (in Cluster mode a key that moved has watchers on the hub of its
// old master).
//
// It runs for every release: outside Cluster mode it goes straight to the
// one hub, and in Cluster mode it walks the hubs under hubsMu (the lock
// order sweepLocked uses too) rather than copying them.
func (b *Backend) wake(channel string) {
	b.hub.wake(channel)
	if b.cluster == nil {
		return
	}
	b.hubsMu.Lock()
	defer b.hubsMu.Unlock()
	for _, h := range b.moved {
		h.wake(channel)
	}
	for _, h := range b.hubs {
		h.wake(channel)
	}
}

// isNilClient reports whether c is nil or a nil pointer in the interface.
func isNilClient(c redis.UniversalClient) bool {
	if c == nil {
		return true
	}
	v := reflect.ValueOf(c)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

// errNoClient is what the calls of a Backend without a client return: the
// zero Backend, or one New made with a nil client.
var errNoClient = fmt.Errorf("goredis: %w: no redis client (make the Backend with goredis.New and a non-nil client)", ctxlock.ErrInvalidOption)

// errNilContext is what calls given a nil context.Context return.
var errNilContext = fmt.Errorf("goredis: %w", ctxlock.ErrNilContext)

// ready is usable for a call given ctx, which must not be nil.
func (b *Backend) ready(ctx context.Context) error {
	if ctx == nil {
		return errNilContext
	}
	return b.usable()
}

// usable reports errNoClient for a Backend without a client.
func (b *Backend) usable() error {
	if b.client == nil || b.hub == nil {
		return errNoClient
	}
	return nil
}

// fill returns n copies of err.
func fill(n int, err error) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
}

// BackendName returns "redis".
func (b *Backend) BackendName() string { return Name }

// Inbox returns the channel this backend's waiters hear their hand-offs on
// (see ctxlock.WaiterQueue): a release that grants a key to one of them
// publishes "<token> <TTL ms> <waiter>" there. It is
// "ctxlock:inbox:<16 random hex digits>", after the WithKeyPrefix prefix
// (white space in it replaced by '_'). It is meant for operators and tests.
func (b *Backend) Inbox() string { return b.inbox }

// randomID returns 16 random hex digits.
func randomID() string {
	var r [8]byte
	_, _ = cryptorand.Read(r[:]) // never fails on supported platforms
	return hex.EncodeToString(r[:])
}

// ClockTokens reports whether the Backend issues fencing tokens from the
// server's clock (WithClockTokens), and the TTL its fencing counters get (0:
// none). A backend built on several Backends that writes the counters
// itself (redlock raises lagging ones) gives them the same TTL.
func (b *Backend) ClockTokens() (counterTTL time.Duration, on bool) {
	if b.opts.counterTTL > 0 {
		counterTTL = b.opts.counterTTL
	}
	return counterTTL, b.opts.clockTokens
}

// Keys returns the Redis keys that hold the lease of the (full) lock key and
// its fencing counter, and the channel a release is published on. It is
// meant for operators and tests.
func (b *Backend) Keys(key string) (lockKey, fenceKey, channel string) {
	lk := b.lockKey(key)
	return lk, lk + fenceSuffix, lk + channelSuffix
}

const (
	fenceSuffix    = ":fence"
	channelSuffix  = ":released"
	wantedSuffix   = ":wanted" // set while another owner waits for the key
	queueSuffix    = ":q"      // waiter ids in arrival order
	deadlineSuffix = ":qd"     // waiter id -> when it loses its place (ms)
	// With WithWaiterHints the queue has keys of its own, so that Backends
	// with and without hints (say, two versions of a redlock deployment
	// during an upgrade) never read each other's queues.
	hintQueueSuffix    = ":hq"
	hintDeadlineSuffix = ":hqd"
	expiredPattern     = "__keyevent@*__:expired"
	inboxPrefix        = "ctxlock:inbox:" // + a random id per Backend (queue.lua's wake_marked matches it)
	metaSeparator      = "\x00"
)

func (b *Backend) lockKey(key string) string { return "{" + b.opts.prefix + key + "}" }

// scriptKeys are a key's Redis keys in the order acquire.lua and relock.lua
// take them (lock, fence, wanted, queue, deadline), then its channel.
type scriptKeys [6]string

// keySuffixes follow the lock key in scriptKeys; hintKeySuffixes with
// WithWaiterHints.
var (
	keySuffixes     = scriptKeys{"", fenceSuffix, wantedSuffix, queueSuffix, deadlineSuffix, channelSuffix}
	hintKeySuffixes = scriptKeys{"", fenceSuffix, wantedSuffix, hintQueueSuffix, hintDeadlineSuffix, channelSuffix}
)

// scriptKeys returns key's scriptKeys, cut from one string: one allocation
// instead of six. (Each is the same string lockKey and its suffixes give.)
func (b *Backend) scriptKeys(key string) (ks scriptKeys) {
	n := len("{") + len(b.opts.prefix) + len(key) + len("}")
	var sb strings.Builder
	suffixes := b.suffixes
	sb.Grow(len(ks)*n + len(suffixes[1]) + len(suffixes[2]) + len(suffixes[3]) + len(suffixes[4]) + len(suffixes[5]))
	for _, suffix := range suffixes {
		sb.WriteString("{")
		sb.WriteString(b.opts.prefix)
		sb.WriteString(key)
		sb.WriteString("}")
		sb.WriteString(suffix)
	}
	all := sb.String()
	for i, suffix := range suffixes {
		ks[i], all = all[:n+len(suffix)], all[n+len(suffix):]
	}
	return ks
}

// ttlArgOf returns ms as an interface, reusing the last one when it is the
// same TTL (see Backend.ttlArg).
func (b *Backend) ttlArgOf(ms int64) any {
	if v := b.ttlArg.Load(); v != nil && v.(int64) == ms {
		return v
	}
	v := any(ms)
	b.ttlArg.Store(v)
	return v
}

// Acquire implements ctxlock.Backend. It runs acquire.lua: when the key is
// free it increments the key's fencing counter and SETs the lease with a
// PX TTL, returning the counter as the token; when another owner holds it,
// it returns a *ctxlock.HeldError with the holder's PTTL. A retry by the
// same owner (after an ambiguous attempt) gets the same lease back. The
// call gives up after req.Timeout; a Timeout ≤ 0 sets no bound of its own:
// ctx's deadline then bounds the call and the pipeline carrying it (a ctx
// without one leaves that pipeline to the client's read and write
// timeouts). Relock likewise.
func (b *Backend) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	if err := b.ready(ctx); err != nil {
		return ctxlock.Lease{}, err
	}
	if err := b.validate(req.Key, req.Owner); err != nil {
		return ctxlock.Lease{}, err
	}
	var extra [5]any
	return b.take(ctx, "acquire", acquireScript, acquireSHA, req, b.scriptKeys(req.Key), append(append(extra[:0], req.Waiter, b.keepArg, b.inboxArg), b.tailArgs...)...)
}

// WatchWaiter implements ctxlock.WaiterQueue: the channel receives the
// Handoff of a release that granted key to waiter (with WithReplicaAcks a
// zero Handoff instead: the waiter takes the grant up with an Acquire), and
// zero Handoffs on (possibly spurious) wake-ups after the subscription
// reconnects or confirms the inbox late (see WithSubscribeWait), on Close,
// and, with WithWaiterHints, on each release while waiter is first in the
// queue, and on a release (or relock) that frees the key without a
// hand-off while the key's wanted mark names waiter (see the package
// doc). It listens on the Backend's inbox only, not on key's
// release channel: a release nobody is queued for, which publishes there
// (see Watch), does not reach it otherwise, and a waiter that is not
// queued (its place lapsed, or, with WithWaiterHints, its relock was
// refused) and not named by the mark finds the key free at its next
// retry.
func (b *Backend) WatchWaiter(key, waiter string) (turns <-chan ctxlock.Handoff, stop func()) {
	if b.usable() != nil {
		return nil, func() {}
	}
	for {
		h := b.hubFor(b.lockKey(key))
		turns, stop := h.watchWaiter(waiter)
		if turns != nil || h == b.hub {
			return turns, stop
		}
		// h was closed as idle since hubFor returned it: route again.
	}
}

// Leave implements ctxlock.WaiterQueue: it takes waiter out of key's queue,
// releases the key if a release had granted it to waiter, and, when the key
// is free, hands it to the next waiter (leave.lua; with WithWaiterHints it
// tells the next waiter instead). Like Release, it first waits (within ctx)
// for this Backend's Acquire and Relock calls on key still queued or in
// flight, so that a refusal arriving late does not queue waiter again.
func (b *Backend) Leave(ctx context.Context, key, waiter string) error {
	return b.leave(ctx, "leave", key, append([]any{waiter, b.lockKey(key) + channelSuffix}, b.leaveArgs...))
}

// leave runs leave.lua on key with args after settle, and again once the
// calls settle stopped waiting for have been answered (runAfter).
func (b *Backend) leave(ctx context.Context, op, key string, args []any) error {
	if err := b.ready(ctx); err != nil {
		return err
	}
	lk := b.lockKey(key)
	keys := []string{lk, lk + b.suffixes[3], lk + b.suffixes[4], lk + fenceSuffix}
	if unsettled := b.batch.settle(ctx, 1, func(int) string { return lk }); unsettled != nil {
		b.runAfter(unsettled, func(ctx context.Context) { _ = leaveScript.Run(ctx, b.client, keys, args...).Err() })
	}
	if err := leaveScript.Run(ctx, b.client, keys, args...).Err(); err != nil {
		return b.wrap(op, key, err)
	}
	return nil
}

// Dequeue takes waiter out of key's queue and does nothing else: no key is
// released, handed over or hinted. A backend built on several servers with
// WithWaiterHints calls it where a waiter that holds the key (on a quorum)
// was queued after all, by an attempt that answered late. Like Leave, it
// first waits (within ctx) for this Backend's calls on key still queued or
// in flight.
func (b *Backend) Dequeue(ctx context.Context, key, waiter string) error {
	return b.leave(ctx, "dequeue", key, []any{waiter, "", "", "1"})
}

// Requeue gives back lease (owner-checked, as Release), which an attempt of
// waiter ("" for a TryLock) took on this server although the attempt failed
// as a whole — a backend built on several servers with WithWaiterHints, whose
// attempt did not reach its quorum — and puts waiter back in its place in the
// key's queue, refreshing it (for WithWaiterKeep, as a refused Acquire
// does; ttl is the lease TTL its entry records), so that it keeps its turn. When that
// frees the key it tells the queue's first waiter, unless that is waiter,
// which retries on its own (requeue.lua). Like Release, it first waits
// (within ctx) for this Backend's calls on the key still queued or in
// flight. Without WithWaiterHints it is Release.
func (b *Backend) Requeue(ctx context.Context, lease ctxlock.Lease, waiter string, ttl time.Duration) error {
	if err := b.ready(ctx); err != nil {
		return err
	}
	if len(b.hintArgs) == 0 {
		if errs := b.Release(ctx, []ctxlock.Lease{lease}); errs != nil {
			return errs[0]
		}
		return nil
	}
	if err := b.validate(lease.Key, lease.Owner); err != nil {
		return err
	}
	ms, err := ttlMillis(ttl)
	if err != nil {
		return fmt.Errorf("goredis: requeue %q: %w", lease.Key, err)
	}
	lk := b.lockKey(lease.Key)
	b.batch.settle(ctx, 1, func(int) string { return lk })
	keys := []string{lk, lk + wantedSuffix, lk + b.suffixes[3], lk + b.suffixes[4]}
	res, err := requeueScript.Run(ctx, b.client, keys, lease.Owner, lk+channelSuffix, b.hintArgs[0], waiter, b.keepArg, ms, b.inboxArg).Result()
	if err != nil {
		return b.wrap("requeue", lease.Key, err)
	}
	n, ok := res.(int64)
	if !ok || n < 0 || n > 1 {
		return fmt.Errorf("goredis: requeue %q: %w: %T %v", lease.Key, errGarbage, res, res)
	}
	if n == 1 {
		b.wake(lk + channelSuffix) // as Release does
	}
	return nil
}

// take runs an acquiring script (acquire.lua, or relock.lua with the old
// owner and the channel as extra arguments) for a validated req, with keys
// from scriptKeys(req.Key), and reads its {1, token} / {0, pttl} answer.
// sha is script's SHA1.
func (b *Backend) take(ctx context.Context, op string, script *redis.Script, sha any, req ctxlock.AcquireRequest, keys scriptKeys, extra ...any) (ctxlock.Lease, error) {
	ms, err := ttlMillis(req.TTL)
	if err != nil {
		return ctxlock.Lease{}, fmt.Errorf("goredis: %s %q: %w", op, req.Key, err)
	}
	if err := b.acksUnsupported(); err != nil {
		return ctxlock.Lease{}, err
	}
	// The batcher bounds the call by req.Timeout.
	value := req.Owner
	if req.Metadata != "" {
		value += metaSeparator + req.Metadata
	}
	var args [9]any // relock.lua's arguments, at most (copied by newCall)
	c := newCall(script, sha, keys[:5], append(append(args[:0], value, b.ttlArgOf(ms)), extra...)...)
	res, err := b.batch.do(ctx, req.Timeout, c)
	if err != nil {
		return ctxlock.Lease{}, b.wrap(op, req.Key, err)
	}
	r, perr := parseReply(res)
	if perr != nil {
		return ctxlock.Lease{}, fmt.Errorf("goredis: %s %q: %w", op, req.Key, perr)
	}
	owner := req.Owner
	switch r.kind {
	case replyYielded:
		if r.n == 1 {
			return ctxlock.Lease{}, errYieldedQueued
		}
		return ctxlock.Lease{}, errYielded
	case replyRefused:
		var remaining time.Duration
		if r.n > 0 {
			remaining = time.Duration(r.n) * time.Millisecond
		}
		return ctxlock.Lease{}, &ctxlock.HeldError{Remaining: remaining, Fence: uint64(r.fence)}
	case replyGranted:
		if req.Waiter == "" {
			return ctxlock.Lease{}, fmt.Errorf("goredis: %s %q: %w: a grant to no waiter", op, req.Key, errGarbage)
		}
		if r.n > 0 {
			owner = ctxlock.GrantOwner(req.Waiter, uint64(r.n))
		}
	}
	if r.n <= 0 {
		// The script stored a lease nobody will hold: give it back, or it
		// would keep the key for its TTL (the error is permanent, and the
		// Manager releases nothing after one).
		b.giveBack(ctx, ctxlock.Lease{Key: req.Key, Owner: owner}, req.Timeout)
		return ctxlock.Lease{}, fmt.Errorf("goredis: %s %q: %w: fencing token %d", op, req.Key, errGarbage, r.n)
	}
	lease := ctxlock.Lease{Key: req.Key, Owner: owner, Token: uint64(r.n)}
	if c.unacked != nil {
		// A grant to the caller's waiter is not given back: its owner is
		// the waiter's, so a give-back landing late (it may time out and
		// still reach the server) could delete the grant after the Lock
		// call's next attempt has adopted it. That attempt renews it and
		// asks the replicas again; a call that gives up leaves the queue,
		// which releases it.
		if owner == req.Owner {
			b.giveBack(ctx, lease, req.Timeout)
		}
		return ctxlock.Lease{}, ctxlock.Unavailable(fmt.Errorf("goredis: %s %q: %w", op, req.Key, c.unacked))
	}
	return lease, nil
}

// giveBack releases lease, which too few replicas acknowledged (see
// WithReplicaAcks), before its attempt reports the fault: the Manager
// releases a failed attempt's lease too, but it knows the owner it asked
// for, not a waiter's grant. It waits for at most timeout
// (giveBackTimeout when 0) and ignores errors: the lease lapses at its TTL
// at worst.
func (b *Backend) giveBack(ctx context.Context, lease ctxlock.Lease, timeout time.Duration) {
	if timeout <= 0 {
		timeout = giveBackTimeout
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	b.Release(ctx, []ctxlock.Lease{lease})
}

// giveBackTimeout bounds a giveBack given no timeout (the default acquire
// timeout).
const giveBackTimeout = 100 * time.Millisecond

// errYielded and errYieldedQueued are take's reports that relock.lua
// released the key for the owners waiting instead of taking it: for owners
// that do not queue, or for queued waiters, behind whom it queued the
// caller's waiter.
var (
	errYielded       = errors.New("goredis: released for owners that wanted the key")
	errYieldedQueued = errors.New("goredis: released for the waiters queued")
)

// Relock implements ctxlock.Relocker: one script (relock.lua) releases old
// and, unless the key's wanted mark says another owner waits, takes the key
// again for req.Owner. (With WithWaiterHints, req.Waiter first in the queue
// takes it anyway: nobody is ahead of it.) Leases of different keys fall
// back to a release and an acquire.
func (b *Backend) Relock(ctx context.Context, old ctxlock.Lease, req ctxlock.AcquireRequest) (lease ctxlock.Lease, wanted, queued bool, err error) {
	if err := b.ready(ctx); err != nil {
		return ctxlock.Lease{}, false, false, err
	}
	if old.Key != req.Key {
		// Whether old's key was wanted says nothing about req's key.
		if errs := b.Release(ctx, []ctxlock.Lease{old}); len(errs) > 0 && errs[0] != nil {
			return ctxlock.Lease{}, false, false, errs[0]
		}
		lease, err := b.Acquire(ctx, req)
		return lease, false, false, err
	}
	if err := b.validate(old.Key, old.Owner); err != nil {
		return ctxlock.Lease{}, false, false, err
	}
	if err := b.validate(req.Key, req.Owner); err != nil {
		return ctxlock.Lease{}, false, false, err
	}
	// relock.lua's arguments: value, ttl (from take), old owner, channel,
	// waiter, waiter keep, inbox[, hints][, clock tokens] (tailArgs).
	keys := b.scriptKeys(req.Key)
	channel := keys[5]
	var extra [7]any
	lease, err = b.take(ctx, "relock", relockScript, relockSHA, req, keys, append(append(extra[:0], old.Owner, channel, req.Waiter, b.keepArg, b.inboxArg), b.tailArgs...)...)
	if queued = errors.Is(err, errYieldedQueued); queued || errors.Is(err, errYielded) {
		b.wake(channel) // this backend's own watchers hear it at once
		return ctxlock.Lease{}, true, queued, nil
	}
	// A refusal queued the waiter, as Acquire's does (not with hints).
	queued = req.Waiter != "" && len(b.hintArgs) == 0 && errors.Is(err, ctxlock.ErrHeld)
	return lease, false, queued, err
}

// AfterRoundTrip implements ctxlock.RoundTripNotifier: f runs once the
// Acquire and Relock batch in flight, or the next one to leave, has been
// answered. It reports false in Cluster mode.
func (b *Backend) AfterRoundTrip(f func()) bool {
	return b.usable() == nil && b.batch.afterRoundTrip(f)
}

// Extend implements ctxlock.Backend: one pipeline (one round trip per node)
// of owner-checked PEXPIREs (extend.lua).
func (b *Backend) Extend(ctx context.Context, leases []ctxlock.Lease, ttl time.Duration) []error {
	if len(leases) == 0 {
		return nil
	}
	if err := b.ready(ctx); err != nil {
		return fill(len(leases), err)
	}
	errs := make([]error, len(leases))
	ms, err := ttlMillis(ttl)
	if err != nil {
		for i := range errs {
			errs[i] = fmt.Errorf("goredis: extend %q: %w", leases[i].Key, err)
		}
		return errs
	}
	if err := b.acksUnsupported(); err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	cmds, unacked := b.runBatch(ctx, extendScript, leases, false, b.opts.acks, func(l ctxlock.Lease) []any { return []any{l.Owner, ms} })
	for i, cmd := range cmds {
		l := leases[i]
		if cmd == nil {
			errs[i] = b.validate(l.Key, l.Owner)
			continue
		}
		res, err := cmd.Result()
		switch {
		case err != nil:
			errs[i] = b.wrap("extend", l.Key, err)
		default:
			n, ok := res.(int64)
			switch {
			case !ok || n < 0 || n > 1:
				errs[i] = fmt.Errorf("goredis: extend %q: %w: %T %v", l.Key, errGarbage, res, res)
			case n == 0:
				errs[i] = fmt.Errorf("goredis: extend %q: %w", l.Key, ctxlock.ErrLost)
			case unacked != nil:
				errs[i] = ctxlock.Unavailable(fmt.Errorf("goredis: extend %q: %w", l.Key, unacked))
			}
		}
	}
	return errs
}

// Release implements ctxlock.Backend: one pipeline of owner-checked DELs
// that PUBLISH on the key's channel (release.lua). A lease no longer owned
// reports nil: it is gone either way.
//
// It first waits (within ctx) for this Backend's Acquire and Relock calls
// on the same keys that are still queued or in flight, whose callers may
// have stopped waiting for them: a release overtaking the acquire that
// took its lease would leave the lease on the server for its TTL. That
// happens to an attempt abandoned when its context ended, and, in
// backends/redlock, to the nodes answering after the quorum decided. When
// ctx ends before those calls are answered, it releases the leases of
// their keys again, in the background, once they have been answered (that
// second release is bounded by one second; Close waits for it).
func (b *Backend) Release(ctx context.Context, leases []ctxlock.Lease) []error {
	errs, _ := b.ReleaseContended(ctx, leases)
	return errs
}

// ReleaseContended implements ctxlock.ContentionReporter: Release, also
// reporting which leases another owner found held (the key's wanted mark,
// set by a failed acquire and cleared by the release, in the same script).
func (b *Backend) ReleaseContended(ctx context.Context, leases []ctxlock.Lease) (_ []error, contended []bool) {
	if len(leases) == 0 {
		return nil, nil
	}
	if err := b.ready(ctx); err != nil {
		return fill(len(leases), err), nil
	}
	errs := make([]error, len(leases))
	if unsettled := b.batch.settle(ctx, len(leases), func(i int) string { return b.lockKey(leases[i].Key) }); unsettled != nil {
		b.releaseAfter(unsettled, leases)
	}
	cmds, _ := b.runBatch(ctx, releaseScript, leases, true, replicaAcks{}, b.releaseArgs)
	for i, cmd := range cmds {
		l := leases[i]
		if cmd == nil {
			errs[i] = b.validate(l.Key, l.Owner)
			continue
		}
		res, err := cmd.Result()
		if err != nil {
			errs[i] = b.wrap("release", l.Key, err)
			continue
		}
		n, ok := res.(int64)
		if !ok || n < 0 || n > 2 {
			errs[i] = fmt.Errorf("goredis: release %q: %w: %T %v", l.Key, errGarbage, res, res)
			continue
		}
		if n == 2 {
			if contended == nil {
				contended = make([]bool, len(leases))
			}
			contended[i] = true
		}
		if n >= 1 {
			// Wake this backend's own watchers at once; others hear the PUBLISH.
			b.wake(b.lockKey(l.Key) + channelSuffix)
		}
	}
	return errs, contended
}

func (b *Backend) releaseArgs(l ctxlock.Lease) []any {
	return append([]any{l.Owner, b.lockKey(l.Key) + channelSuffix}, b.tailArgs...)
}

// laterTimeout bounds what runAfter runs.
const laterTimeout = time.Second

// runAfter runs op again, in the background, bounded by laterTimeout, once
// calls have been answered: a Release, Leave or Dequeue stopped waiting for
// them (settle) when its ctx ended, so what it sent may have reached the
// server before them, and one of them may then take its lease or queue the
// waiter again. Close waits for it.
func (b *Backend) runAfter(calls []*call, op func(ctx context.Context)) {
	f := func() {
		for _, c := range calls {
			<-c.done // each ends by itself, bounded by its batch's timeouts
		}
		ctx, cancel := context.WithTimeout(context.Background(), laterTimeout)
		defer cancel()
		op(ctx)
	}
	if !b.batch.later(calls, f) {
		f() // closed, and calls answered: at once
	}
}

// releaseAfter is runAfter for a Release: it releases again the leases of
// the keys of calls (in backends/redlock a node's release overtaken by its
// acquire would fail unseen, the quorum having released the lease, and the
// node would keep it for its TTL).
func (b *Backend) releaseAfter(calls []*call, leases []ctxlock.Lease) {
	var again []ctxlock.Lease
	for _, l := range leases {
		lk := b.lockKey(l.Key)
		for _, c := range calls {
			if c.keys[0] == lk {
				again = append(again, l)
				break
			}
		}
	}
	b.runAfter(calls, func(ctx context.Context) {
		cmds, _ := b.runBatch(ctx, releaseScript, again, true, replicaAcks{}, b.releaseArgs)
		for i, cmd := range cmds {
			if cmd == nil {
				continue
			}
			if n, err := cmd.Int64(); err == nil && n >= 1 {
				b.wake(b.lockKey(again[i].Key) + channelSuffix)
			}
		}
	})
}

// runBatch runs script once per lease in one pipeline (EVALSHA), then
// re-runs the ones that failed with NOSCRIPT with EVAL in a second pipeline.
// Invalid leases get a nil command. Each pipeline ends with acks's WAIT;
// unacked wraps ErrNotReplicated when one fell short.
func (b *Backend) runBatch(ctx context.Context, s *redis.Script, leases []ctxlock.Lease, withWanted bool, acks replicaAcks, args func(ctxlock.Lease) []any) (cmds []*redis.Cmd, unacked error) {
	keys := func(l ctxlock.Lease) []string {
		lk := b.lockKey(l.Key)
		if withWanted {
			return []string{lk, lk + wantedSuffix, lk + b.suffixes[3], lk + b.suffixes[4], lk + fenceSuffix}
		}
		return []string{lk}
	}
	cmds = make([]*redis.Cmd, len(leases))
	pipe := b.client.Pipeline()
	for i, l := range leases {
		if b.validate(l.Key, l.Owner) != nil {
			continue
		}
		cmds[i] = s.EvalSha(ctx, pipe, keys(l), args(l)...)
	}
	sent := pipe.Len()
	if sent == 0 {
		return cmds, nil
	}
	acked := acks.wait(ctx, pipe)
	_, _ = pipe.Exec(ctx) // errors are per command
	unacked = acks.check(acked)
	var retry []int
	for i, cmd := range cmds {
		if cmd != nil && isNoScript(cmd.Err()) {
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 {
		pipe = b.client.Pipeline()
		for _, i := range retry {
			cmds[i] = s.Eval(ctx, pipe, keys(leases[i]), args(leases[i])...)
		}
		acked = acks.wait(ctx, pipe)
		_, _ = pipe.Exec(ctx)
		if len(retry) == sent {
			// The first WAIT covered none of these writes.
			unacked = acks.check(acked)
		} else {
			unacked = errors.Join(unacked, acks.check(acked))
		}
	}
	return cmds, unacked
}

func isNoScript(err error) bool {
	if err == nil {
		// Most calls succeed, and redis.HasErrorPrefix allocates even for a
		// nil error (its errors.As target escapes).
		return false
	}
	return errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT")
}

// Watch implements ctxlock.Backend. All watchers of a Backend share one
// subscription (started by the first Watch; in Cluster mode one per
// master, that of the key's master); a key's channel is subscribed
// while it has watchers. When the subscription is re-established after a
// fault every watcher gets a (possibly spurious) wake-up, since a release may
// have been missed. After Close, Watch returns a nil channel (poll).
func (b *Backend) Watch(key string) (released <-chan struct{}, stop func()) {
	if b.usable() != nil {
		return nil, func() {}
	}
	lk := b.lockKey(key)
	for {
		h := b.hubFor(lk)
		released, stop := h.watch(lk + channelSuffix)
		if released != nil || h == b.hub {
			return released, stop
		}
		// h was closed as idle since hubFor returned it: route again.
	}
}

// Health implements ctxlock.Backend. It PINGs the server (in Cluster mode
// every master, and checks CLUSTER INFO's cluster_state) and reports the
// state of the release subscription. err matches ctxlock.ErrUnavailable when
// the server, or any master, cannot be reached or the cluster is not ok; a
// lost subscription is only a condition (waiters poll meanwhile).
func (b *Backend) Health(ctx context.Context) (conditions []string, err error) {
	if err := b.ready(ctx); err != nil {
		return []string{"redis: no client"}, err
	}
	var mu sync.Mutex
	var errs []error
	fail := func(cond string, e error) {
		mu.Lock()
		defer mu.Unlock()
		conditions = append(conditions, cond)
		if e != nil {
			errs = append(errs, e)
		}
	}
	if e := b.acksUnsupported(); e != nil {
		fail(fmt.Sprintf("redis: WithReplicaAcks needs a *redis.Client (standalone or Sentinel), not a %T: every Lock fails", b.client), e)
	}
	if b.cluster != nil {
		ferr := b.cluster.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			if e := node.Ping(ctx).Err(); e != nil {
				addr := node.Options().Addr
				fail(fmt.Sprintf("redis: master %s unreachable: %v", addr, e), fmt.Errorf("goredis: master %s: %w", addr, e))
				return e
			}
			return nil
		})
		if ferr != nil && len(errs) == 0 {
			fail(fmt.Sprintf("redis: cluster state unknown: %v", ferr), fmt.Errorf("goredis: cluster: %w", ferr))
		}
		info, e := b.cluster.ClusterInfo(ctx).Result()
		switch {
		case e != nil:
			fail(fmt.Sprintf("redis: CLUSTER INFO failed: %v", e), fmt.Errorf("goredis: cluster info: %w", e))
		default:
			if st := infoField(info, "cluster_state"); st != "ok" {
				fail("redis: cluster_state:"+st, fmt.Errorf("goredis: cluster_state is %q", st))
			}
		}
	} else if e := b.client.Ping(ctx).Err(); e != nil {
		fail(fmt.Sprintf("redis: unreachable: %v", e), fmt.Errorf("goredis: ping: %w", e))
	}
	if b.cluster != nil {
		b.hubsMu.Lock()
		b.sweepLocked()
		b.hubsMu.Unlock()
	}
	for _, h := range b.allHubs() {
		if cond := h.condition(); cond != "" {
			conditions = append(conditions, cond)
		}
	}
	sort.Strings(conditions)
	if len(errs) > 0 {
		return conditions, ctxlock.Unavailable(errors.Join(errs...))
	}
	return conditions, nil
}

// Close stops the backend's subscriptions and their goroutines, and wakes every
// watcher; it waits for the Acquire and Relock pipelines in flight, and for
// the second releases of Releases that stopped waiting for them (see
// Release), which the calls' timeouts bound, and the client's timeouts
// (see New). It does not close the client. It is idempotent.
func (b *Backend) Close() error {
	if b.hub == nil {
		return nil // the zero Backend
	}
	b.hubsMu.Lock()
	b.hubsClosed = true
	hubs, moved := b.hubs, b.moved
	b.hubs, b.moved = nil, nil
	b.hubsMu.Unlock()
	var wg sync.WaitGroup
	for _, h := range hubs {
		wg.Go(h.close)
	}
	for _, h := range moved {
		wg.Go(h.close)
	}
	b.hub.close()
	wg.Wait()
	b.retiring.Wait()
	b.batch.close()
	return nil
}

var errGarbage = errors.New("unexpected reply from redis")

// validate rejects what the scripts cannot store safely.
func (b *Backend) validate(key, owner string) error {
	switch {
	case key == "":
		return fmt.Errorf("goredis: %w: empty key", ctxlock.ErrInvalidKey)
	case b.cluster != nil && strings.HasPrefix(b.opts.prefix+key, "}"):
		// "{}..." is an empty hash tag: Redis Cluster would hash each of
		// the key's Redis keys whole, to different slots, and every script
		// would fail with CROSSSLOT.
		return fmt.Errorf("goredis: %w: key %q: in Redis Cluster a key (with its prefix) cannot start with '}'", ctxlock.ErrInvalidKey, key)
	case owner == "":
		return fmt.Errorf("goredis: key %q: empty owner", key)
	case strings.Contains(owner, metaSeparator):
		return fmt.Errorf("goredis: key %q: owner contains a NUL byte", key)
	}
	return nil
}

func ttlMillis(d time.Duration) (int64, error) {
	if d <= 0 {
		// Checked first: rounding up would turn -1ns..-999999ns into 1ms.
		return 0, fmt.Errorf("%w: TTL %v must be positive", ctxlock.ErrInvalidOption, d)
	}
	ms := d.Milliseconds()
	if d%time.Millisecond != 0 {
		ms++ // round up: never shorter than asked
	}
	return ms, nil
}

// Kinds of an acquiring script's reply (acquire.lua, relock.lua).
const (
	replyRefused  = 0 // {0, holder's PTTL, fencing counter}
	replyAcquired = 1 // {1, token}
	replyYielded  = 2 // {2, queued}: relock.lua released the key for waiting owners
	replyGranted  = 3 // {3, token}: the key was granted to the caller's waiter
)

// scriptReply is an acquiring script's reply.
type scriptReply struct {
	kind  int64
	n     int64 // the token, or the holder's PTTL when refused
	fence int64 // when refused: the key's fencing counter
}

// parseReply parses an acquiring script's {kind, number[, fence]} reply;
// only a refusal has the third element (it may be missing: older scripts).
func parseReply(res any) (scriptReply, error) {
	arr, ok := res.([]any)
	if !ok || len(arr) < 2 || len(arr) > 3 {
		return scriptReply{}, fmt.Errorf("%w: %T %v", errGarbage, res, res)
	}
	var r scriptReply
	var ok1, ok2 bool
	r.kind, ok1 = arr[0].(int64)
	r.n, ok2 = arr[1].(int64)
	if !ok1 || !ok2 || r.kind < replyRefused || r.kind > replyGranted || (r.kind == replyYielded && r.n != 0 && r.n != 1) {
		return scriptReply{}, fmt.Errorf("%w: %v", errGarbage, arr)
	}
	if len(arr) == 3 {
		f, ok := arr[2].(int64)
		if !ok || f < 0 || r.kind != replyRefused {
			return scriptReply{}, fmt.Errorf("%w: %v", errGarbage, arr)
		}
		r.fence = f
	}
	return r, nil
}

// wrap adds context to err and marks transient faults with
// ctxlock.Unavailable.
//
// In Cluster mode a transient fault also has the client reload its slot
// map (go-redis does it in the background, at most every 200ms). go-redis
// reloads it on its own only on MOVED or READONLY replies, or every
// ClusterStateReloadInterval (60s by default): after a master died, the
// commands for its slots would go on failing against it, as none comes
// back MOVED, and its keys could be neither locked nor refreshed for up to
// a minute after its replica had taken over.
func (b *Backend) wrap(op, key string, err error) error {
	e := fmt.Errorf("goredis: %s %q: %w", op, key, err)
	if errors.Is(err, context.DeadlineExceeded) {
		// go-redis keeps re-dialing a server that refuses connections
		// within the call, so the deadline hides why: say where to look.
		e = fmt.Errorf("goredis: %s %q: no answer before the deadline (Manager.Health reports whether the server is reachable): %w", op, key, err)
	}
	if !isTransient(err) {
		return e
	}
	if b.cluster != nil && !errors.Is(err, context.Canceled) { // a caller's choice, not a fault
		b.cluster.ReloadState(context.Background())
	}
	return ctxlock.Unavailable(e)
}

// isTransient reports whether err is worth retrying: transport faults
// (timeouts, refused or reset connections, EOF, pool timeouts, context
// deadlines) and the server replies that mean "not now" (LOADING, READONLY,
// MOVED, ASK, CLUSTERDOWN, TRYAGAIN, MASTERDOWN, BUSY, NOREPLICAS, max
// clients, OOM under a noeviction policy until keys expire, a script
// stopped by a migrating slot or a cluster down). Other
// server replies (WRONGTYPE, NOPERM, other script errors) and use of a
// closed client are permanent.
func isTransient(err error) bool {
	if err == nil || errors.Is(err, redis.ErrClosed) {
		return false
	}
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return true // transport level
	}
	if _, ok := redis.IsMovedError(err); ok {
		return true
	}
	if _, ok := redis.IsAskError(err); ok {
		return true
	}
	return redis.IsLoadingError(err) || redis.IsReadOnlyError(err) ||
		redis.IsClusterDownError(err) || redis.IsTryAgainError(err) ||
		redis.IsMasterDownError(err) || redis.IsMaxClientsError(err) ||
		redis.IsNoReplicasError(err) || redis.HasErrorPrefix(err, "BUSY") ||
		redis.HasErrorPrefix(err, "OOM") || isScriptRedirect(err)
}

// isScriptRedirect reports a script stopped by a command the node would
// have redirected (a key of a slot migrating away that no longer exists
// there) or refused (the cluster down): ASK, MOVED or CLUSTERDOWN, seen
// from inside a script. Redis 7 words it "Script attempted to ...", Redis 6
// "Lua script attempted to ...".
func isScriptRedirect(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "cript attempted to access a non local key") ||
		(strings.Contains(msg, "cript attempted to execute a") && strings.Contains(msg, "while the cluster is down"))
}

func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && k == name {
			return v
		}
	}
	return ""
}

// since formats how long ago t was, for conditions.
func since(t time.Time) string {
	return strconv.FormatFloat(time.Since(t).Seconds(), 'f', 1, 64) + "s"
}

var (
	_ ctxlock.ContentionReporter = (*Backend)(nil)
	_ ctxlock.Relocker           = (*Backend)(nil)
	_ ctxlock.WaiterQueue        = (*Backend)(nil)
	_ ctxlock.RoundTripNotifier  = (*Backend)(nil)
)
