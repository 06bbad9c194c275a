package redlock

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
)

// Name is what BackendName returns.
const Name = "redlock"

// Defaults of the options.
const (
	// DefaultDriftFactor is the share of the TTL allowed for clock drift
	// between the nodes and this process (Redlock's 0.01).
	DefaultDriftFactor = 0.01
	// DefaultTimeoutFactor is the share of the TTL a single node may take to
	// answer an acquire or extend (further bounded by the attempt's timeout,
	// ctxlock.WithAcquireTimeout).
	DefaultTimeoutFactor = 0.1
	// DefaultReleaseTimeout bounds how long a node may take to answer a
	// release or a health check when the caller's context has no earlier
	// deadline.
	DefaultReleaseTimeout = time.Second
)

var (
	//go:embed raise.lua
	raiseSrc    string
	raiseScript = redis.NewScript(raiseSrc)
)

// Option configures a Backend.
type Option func(*options)

type options struct {
	drift    float64
	timeout  float64
	nodeOpts []goredis.Option
	err      error
}

// WithDriftFactor sets the share of the TTL allowed for clock drift
// (default DefaultDriftFactor): a hold is valid for
// TTL − elapsed − (TTL×factor + 2ms). It must be in [0, 0.5); New reports
// other values as errors matching ctxlock.ErrInvalidOption.
func WithDriftFactor(f float64) Option {
	return func(o *options) {
		if !(f >= 0 && f < 0.5) {
			o.err = errors.Join(o.err, fmt.Errorf("%w: redlock drift factor %v not in [0, 0.5)", ctxlock.ErrInvalidOption, f))
			return
		}
		o.drift = f
	}
}

// WithTimeoutFactor sets how long one node may take to answer an acquire or
// an extend, as a share of the TTL (default DefaultTimeoutFactor). An
// acquire's per-node timeout is also bounded by the attempt's timeout. A
// slow or frozen node then costs at most this much per attempt, and the
// validity of a hold stays close to its TTL. It must be in (0, 0.5); New
// reports other values as errors matching ctxlock.ErrInvalidOption.
func WithTimeoutFactor(f float64) Option {
	return func(o *options) {
		if !(f > 0 && f < 0.5) {
			o.err = errors.Join(o.err, fmt.Errorf("%w: redlock timeout factor %v not in (0, 0.5)", ctxlock.ErrInvalidOption, f))
			return
		}
		o.timeout = f
	}
}

// WithNodeOptions passes options to the goredis.Backend of every node
// (goredis.WithKeyPrefix, goredis.WithHealthCheckInterval, ...). Every node
// has goredis.WithWaiterHints (see Backend.WatchWaiter); pass it here to
// change its window.
func WithNodeOptions(opts ...goredis.Option) Option {
	return func(o *options) { o.nodeOpts = append(o.nodeOpts, opts...) }
}

// Backend is a ctxlock.Backend that holds a lease only while a quorum of N
// independent Redis masters agree (Redlock). Each node is served by a
// *goredis.Backend, so the scripts, pipelines, error classification and
// release subscription are those of the goredis package. It is safe for
// concurrent use. See the package documentation for the algorithm and the
// limits of its fencing tokens. Make it with New: the zero Backend has no
// nodes, and its calls fail with an error matching ctxlock.ErrInvalidOption.
// A call given a nil context fails with an error matching
// ctxlock.ErrNilContext.
type Backend struct {
	inflight sync.WaitGroup // node calls and watchers still running after their operation returned
	closed   atomic.Bool
	// life guards active, the calls in progress (see enter), and drained,
	// closed when they are done once Close waits for them.
	life    sync.Mutex
	active  int
	drained chan struct{}
	done    chan struct{} // closed by Close: ends the watchers
	once    sync.Once
	nodes   []*goredis.Backend
	clients []redis.UniversalClient
	addrs   []string
	quorum  int
	opts    options
	// queued holds the waiters (AcquireRequest.Waiter) that a node may
	// have queued: an attempt of theirs was refused, or yielded. Only their
	// failed attempts put them back in the queues (Requeue); a Lock call
	// that was never refused is not queued anywhere. Entries go when the
	// waiter wins or leaves.
	queued sync.Map // waiter id → struct{}
	// attempts has the nodes' acquire and relock calls whose goroutines
	// have not returned yet (see attempts.wait).
	attempts attempts
	// retries has, per node, the releases to send there again (see
	// retryRelease).
	retries []releaseRetries
}

// releaseRetries is one node's releases that failed with a transient error
// after their operation had returned, and whether a goroutine sends them.
type releaseRetries struct {
	mu      sync.Mutex
	pending []retryLease
	running bool
}

type retryLease struct {
	lease ctxlock.Lease
	until time.Time // given up then: the lease has lapsed, or the node is gone
}

const (
	// releaseRetryFor bounds how long a node's release is retried after a
	// transient failure (see retryRelease).
	releaseRetryFor = time.Minute
	// maxReleaseRetries bounds the releases waiting to be retried per node;
	// beyond it the oldest are dropped (they lapse at their TTL).
	maxReleaseRetries = 10000
)

// attempts has, per node and key, the goroutines of take's fan-outs whose
// node call has not returned. A node's call is invisible to the node
// backend's Release (goredis.Backend.Release waits for the calls queued or
// in flight there) until that goroutine has queued it: a release on a node
// whose goroutine has not run yet when the quorum decided would overtake
// it, and the node would keep a lease nobody holds for its TTL.
type attempts struct {
	mu sync.Mutex
	m  map[attemptKey][]chan struct{} // each closed when its goroutine's call returned
}

type attemptKey struct {
	node int
	key  string
}

// start registers a call on key on each of nodes nodes, before their
// goroutines start, and returns their channels: the goroutine of node i
// calls end(i, key, done[i]) once its call has returned.
func (a *attempts) start(key string, nodes int) (done []chan struct{}) {
	done = make([]chan struct{}, nodes)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = make(map[attemptKey][]chan struct{})
	}
	for i := range done {
		done[i] = make(chan struct{})
		k := attemptKey{i, key}
		a.m[k] = append(a.m[k], done[i])
	}
	return done
}

func (a *attempts) end(node int, key string, done chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := attemptKey{node, key}
	rest := slices.DeleteFunc(a.m[k], func(c chan struct{}) bool { return c == done })
	if len(rest) == 0 {
		delete(a.m, k)
	} else {
		a.m[k] = rest
	}
	close(done)
}

// wait returns once the calls on key on node that had started when it was
// called have returned (each within its per-node timeout; calls started
// later are not waited for, so a busy key cannot hold it up), and reports
// whether there was one.
func (a *attempts) wait(node int, key string) bool {
	a.mu.Lock()
	pending := slices.Clone(a.m[attemptKey{node, key}])
	a.mu.Unlock()
	for _, done := range pending {
		<-done
	}
	return len(pending) > 0
}

var (
	_ ctxlock.Backend            = (*Backend)(nil)
	_ ctxlock.BackendNamer       = (*Backend)(nil)
	_ ctxlock.ContentionReporter = (*Backend)(nil)
	_ ctxlock.Relocker           = (*Backend)(nil)
	_ ctxlock.WaiterQueue        = (*Backend)(nil)
)

// New returns a Backend over clients, one per independent Redis master (not
// replicas of each other, not one cluster). Any number N ≥ 1 works, with a
// quorum of N/2+1, but only an odd N ≥ 3 survives node failures: N nodes
// tolerate (N−1)/2 of them down, so 4 tolerate no more than 3 do, and 1 or 2
// none (one node is a plain single-server lock, handy in tests). With no
// clients, a nil client, a server passed twice (the same client, two
// clients of one address, or two Cluster clients sharing a seed address)
// or an invalid option, New returns an error
// matching ctxlock.ErrInvalidOption.
//
// The backend does not own the clients: Close stops the backend's
// subscriptions, and the caller closes the clients afterwards. Create them
// with ContextTimeoutEnabled: true so that per-node timeouts bound network
// I/O, and with short dial/read timeouts so that a dead node is noticed
// quickly. New does no I/O.
func New(clients []redis.UniversalClient, opts ...Option) (*Backend, error) {
	o := options{drift: DefaultDriftFactor, timeout: DefaultTimeoutFactor}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.err != nil {
		return nil, o.err
	}
	n := len(clients)
	if n < 1 {
		return nil, fmt.Errorf("%w: redlock needs at least one node", ctxlock.ErrInvalidOption)
	}
	b := &Backend{
		nodes:   make([]*goredis.Backend, n),
		clients: clients,
		addrs:   make([]string, n),
		quorum:  Quorum(n),
		opts:    o,
		done:    make(chan struct{}),
		retries: make([]releaseRetries, n),
	}
	for i, c := range clients {
		if isNil(c) {
			return nil, fmt.Errorf("%w: redlock node %d: nil client", ctxlock.ErrInvalidOption, i)
		}
		b.addrs[i] = addrOf(c, i)
		for j := range i {
			if sameNode(clients[j], b.addrs[j], c, b.addrs[i]) {
				return nil, fmt.Errorf("%w: redlock nodes %d and %d are the same server (%s): each counts once in the quorum", ctxlock.ErrInvalidOption, j, i, b.addrs[i])
			}
		}
	}
	nodeOpts := append([]goredis.Option{goredis.WithWaiterHints(0)}, o.nodeOpts...)
	for i, c := range clients {
		b.nodes[i] = goredis.New(c, nodeOpts...)
	}
	return b, nil
}

// isNil reports whether c is nil, or a nil pointer in the interface (a
// nil *redis.Client, say), which would panic at first use.
func isNil(c redis.UniversalClient) bool {
	if c == nil {
		return true
	}
	v := reflect.ValueOf(c)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

// sameNode reports whether clients a and b (with addresses aa and ba, see
// addrOf) serve the same server: the same client, or clients of one address
// (whatever their databases: one server is one failure). Sentinel clients
// (redis.NewFailoverClient) all report the address "FailoverClient", so
// only the same client is caught among them.
func sameNode(a redis.UniversalClient, aa string, b redis.UniversalClient, ba string) bool {
	// Compared only when both values can be: a comparable client type
	// may hold an incomparable value (a slice in an interface field), and
	// == would panic on it.
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	if va.Type() == vb.Type() && va.Comparable() && vb.Comparable() && a == b {
		return true
	}
	// Two Cluster clients are one Cluster when they share a seed address:
	// comparing their joined seed lists (aa == ba) missed the same Cluster
	// given with its seeds in another order, or with other seeds besides.
	if ca, ok := a.(*redis.ClusterClient); ok {
		if cb, ok := b.(*redis.ClusterClient); ok {
			for _, addr := range ca.Options().Addrs {
				if slices.Contains(cb.Options().Addrs, addr) {
					return true
				}
			}
		}
	}
	known := func(c redis.UniversalClient) bool {
		switch c := c.(type) {
		case *redis.Client:
			return c.Options().Addr != failoverAddr
		case *redis.ClusterClient:
			return true
		}
		return false
	}
	return known(a) && known(b) && aa == ba
}

// failoverAddr is the address go-redis gives a Sentinel client's options.
const failoverAddr = "FailoverClient"

func addrOf(c redis.UniversalClient, i int) string {
	switch c := c.(type) {
	case *redis.Client:
		return c.Options().Addr
	case *redis.ClusterClient:
		return strings.Join(c.Options().Addrs, ",")
	}
	return fmt.Sprintf("node%d", i)
}

// errNoNodes is what the calls of the zero Backend return.
var errNoNodes = fmt.Errorf("redlock: %w: no nodes (make the Backend with redlock.New)", ctxlock.ErrInvalidOption)

// errNilContext is what calls given a nil context.Context return.
var errNilContext = fmt.Errorf("redlock: %w", ctxlock.ErrNilContext)

// ErrClosed is returned by every call on a closed Backend (Watch and
// WatchWaiter return a nil channel instead).
var ErrClosed = errors.New("redlock: backend closed")

// ready is usable for a call given ctx, which must not be nil, and enters
// the call (see enter): when it returns nil, the caller must call b.exit
// once the call is done.
func (b *Backend) ready(ctx context.Context) error {
	if ctx == nil {
		return errNilContext
	}
	if err := b.usable(); err != nil {
		return err
	}
	if !b.enter() {
		return ErrClosed
	}
	return nil
}

// enter counts a call in, unless Close has begun. Close waits for the calls
// counted in before it waits for the goroutines they started (inflight): a
// call starting goroutines as Close waits for them would race it.
func (b *Backend) enter() bool {
	b.life.Lock()
	defer b.life.Unlock()
	if b.closed.Load() {
		return false
	}
	b.active++
	return true
}

// exit counts a call out.
func (b *Backend) exit() {
	b.life.Lock()
	defer b.life.Unlock()
	b.active--
	if b.active == 0 && b.drained != nil {
		close(b.drained)
		b.drained = nil
	}
}

// usable reports errNoNodes for the zero Backend, which has no nodes: a
// quorum of none would be reached by nothing, and report every key held.
func (b *Backend) usable() error {
	if len(b.nodes) == 0 {
		return errNoNodes
	}
	return nil
}

// BackendName returns "redlock".
func (b *Backend) BackendName() string { return Name }

// Len returns the number of nodes.
func (b *Backend) Len() int { return len(b.nodes) }

// Quorum returns the number of nodes that must agree: Len()/2 + 1.
func (b *Backend) Quorum() int { return b.quorum }

// Node returns the goredis backend serving node i (in the order of the
// clients passed to New), for operators and tests.
func (b *Backend) Node(i int) *goredis.Backend { return b.nodes[i] }

// Keys returns the Redis keys of the lease and fencing counter of the (full)
// lock key, and its release channel; they are the same on every node (see
// goredis.Backend.Keys).
func (b *Backend) Keys(key string) (lockKey, fenceKey, channel string) {
	if len(b.nodes) == 0 {
		return new(goredis.Backend).Keys(key) // the zero Backend: no prefix
	}
	return b.nodes[0].Keys(key)
}

// each runs f for every node in indices (every node when nil) in parallel,
// each with ctx bounded by timeout (when > 0), and waits for all of them.
func (b *Backend) each(ctx context.Context, timeout time.Duration, indices []int, f func(ctx context.Context, i int)) {
	startFan(b, ctx, timeout, indices, struct{}{}, func(ctx context.Context, i int) struct{} {
		f(ctx, i)
		return struct{}{}
	}).all()
}

// fan is one operation sent to several nodes at once. Its results arrive
// in any order; the caller collects as many as it needs (until) and may
// leave the rest: those goroutines finish on their own, bounded by the
// timeout each was given (the per-node timeout, or DefaultReleaseTimeout
// for a release in the background), and Close waits for them.
type fan[R any] struct {
	res  []R // per node; pending until the node answered
	ch   chan fanResult[R]
	left int
}

type fanResult[R any] struct {
	i int
	r R
}

func startFan[R any](b *Backend, ctx context.Context, timeout time.Duration, indices []int, pending R, f func(ctx context.Context, i int) R) *fan[R] {
	if indices == nil {
		indices = make([]int, len(b.nodes))
		for i := range indices {
			indices[i] = i
		}
	}
	fn := &fan[R]{res: make([]R, len(b.nodes)), ch: make(chan fanResult[R], len(indices)), left: len(indices)}
	for i := range fn.res {
		fn.res[i] = pending
	}
	for _, i := range indices {
		b.inflight.Go(func() {
			c := ctx
			if timeout > 0 {
				var cancel context.CancelFunc
				c, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			fn.ch <- fanResult[R]{i, f(c, i)} // buffered: never blocks
		})
	}
	return fn
}

// until collects results until enough(results) holds or every node answered.
func (f *fan[R]) until(enough func([]R) bool) {
	for f.left > 0 {
		r := <-f.ch
		f.res[r.i] = r.r
		f.left--
		if enough != nil && enough(f.res) {
			return
		}
	}
}

// all collects every result.
func (f *fan[R]) all() { f.until(nil) }

// untilDone is until, but it stops waiting (and returns ctx.Err()) when ctx
// is done; the nodes' calls go on in the background.
func (f *fan[R]) untilDone(ctx context.Context, enough func([]R) bool) error {
	for f.left > 0 {
		select {
		case r := <-f.ch:
			f.res[r.i] = r.r
			f.left--
			if enough(f.res) {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// errNoAnswer stands for a node that has not answered (yet) when an
// operation's outcome was decided without it.
var errNoAnswer = ctxlock.Unavailable(errors.New("redlock: no answer yet"))

func statusOf(err error) NodeStatus {
	switch {
	case err == nil:
		return NodeOK
	case errors.Is(err, ctxlock.ErrHeld), errors.Is(err, ctxlock.ErrLost), err == errYielded:
		return NodeTaken
	case errors.Is(err, ctxlock.ErrUnavailable):
		return NodeUnreachable
	default:
		return NodeFailed
	}
}

// quorumError builds the QuorumError of one lease's outcome on every node.
func (b *Backend) quorumError(op, key string, errs []error, transient bool) *QuorumError {
	qe := &QuorumError{Op: op, Key: key, Nodes: len(b.nodes), Quorum: b.quorum, transient: transient}
	for i, err := range errs {
		s := statusOf(err)
		if s == NodeOK {
			qe.OK++
			continue
		}
		ne := &NodeError{Node: i, Addr: b.addrs[i], Status: s, Err: err}
		var he *ctxlock.HeldError
		if errors.As(err, &he) {
			ne.Remaining = he.Remaining
		}
		qe.Failures = append(qe.Failures, ne)
	}
	return qe
}

func tallyOf(errs []error) tally {
	st := make([]NodeStatus, len(errs))
	for i, err := range errs {
		st[i] = statusOf(err)
	}
	return newTally(st)
}

// nodeTimeout is the per-node bound of an acquire or extend of a lease of ttl.
func (b *Backend) nodeTimeout(ttl, attempt time.Duration) time.Duration {
	d := time.Duration(float64(ttl) * b.opts.timeout)
	if attempt > 0 && attempt < d {
		d = attempt
	}
	return max(d, time.Millisecond)
}

// Acquire implements ctxlock.Backend. It sends the acquire to every node at
// once, each bounded by the per-node timeout (WithTimeoutFactor, and
// req.Timeout). It returns as soon as a quorum granted — slower nodes finish
// in the background, and if they grant too the lease is on them as well —
// and the lease stands when the validity left, TTL − elapsed − drift, is
// positive. Its token is the largest of the granting quorum's counters;
// granting nodes whose counter lagged are raised to it (one more round trip,
// only when the counters differ, in what is left of req.Timeout: the whole
// attempt gives up after req.Timeout), and a quorum of nodes must carry the
// token.
//
// Otherwise Acquire waits for every node, releases the attempt at once on
// every node that granted it or did not answer, and returns: a
// *ctxlock.HeldError wrapping a *QuorumError when other owners hold the key
// on too many nodes (Remaining is when enough of them expire for a quorum to
// be free: the k-th soonest holder expiry, k = taken − (N − quorum)); a
// *QuorumError matching ctxlock.ErrUnavailable when unreachable nodes or
// slowness kept it from a quorum; a permanent *QuorumError otherwise. When
// the release fails on a node that granted the attempt (waiting for its
// answer may take up to one more per-node timeout), the refusal is reported
// as a fault, matching
// ctxlock.ErrUnavailable and not ctxlock.ErrHeld: the Manager then releases
// the lease until that is confirmed, where after a refusal it would leave
// the lease to keep the key on that node for a whole TTL.
func (b *Backend) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	lease, _, _, err := b.take(ctx, "acquire", req, nil)
	return lease, err
}

// Relock implements ctxlock.Relocker: one fan-out instead of a Release and
// an Acquire. It sends the goredis relock (goredis.Backend.Relock: release
// old and take the key again, in one script, unless the node's wanted mark
// says another owner was refused meanwhile) to every node at once, with the
// per-node timeout of Acquire.
//
// It acquires exactly when Acquire would — a quorum of nodes granted, the
// validity TTL − elapsed − drift is positive, the token is the largest of
// the quorum's counters, lagging counters are raised — and, in addition, no
// node yielded before the quorum was reached. A yielding node released old
// and kept the key free for the owners it had refused, which are waiting
// for it (it tells the first waiter of its queue, if any, and queues
// req.Waiter behind it, see WatchWaiter); once one node yields the hold is
// given up (released at once on every node that granted it), so a waiting owner elsewhere is not refused
// again by a quorum that re-took the key: Relock then returns wanted true
// and a nil error, provided old is known released (or no longer owned) on a
// quorum of nodes, and queued true if a quorum of nodes queued req.Waiter
// (else no hint is sure to come, and the Manager tries again soon). A node that yields after a quorum granted does not undo
// the grant: the waiting owner it woke is refused by the quorum, which marks
// the key wanted again for the next release.
//
// Otherwise Relock returns what Acquire would (a *ctxlock.HeldError when
// other owners hold the key, a *QuorumError else); a refusal with old not
// known released on a quorum is a *QuorumError matching
// ctxlock.ErrUnavailable (unless permanent errors alone caused it), so that
// the Manager retries the release of old. Wherever a node's relock failed
// (unreachable, timed out, or a permanent error), old is released there
// right after, in the background (and again while that fails with a
// transient error, as Release does), so that it
// does not linger on those nodes for its TTL. Leases of different keys fall
// back to ReleaseContended and Acquire (and never report wanted).
func (b *Backend) Relock(ctx context.Context, old ctxlock.Lease, req ctxlock.AcquireRequest) (lease ctxlock.Lease, wanted, queued bool, err error) {
	if old.Key != req.Key {
		if errs := b.Release(ctx, []ctxlock.Lease{old}); errs != nil && errs[0] != nil {
			return ctxlock.Lease{}, false, false, errs[0]
		}
		lease, err := b.Acquire(ctx, req)
		return lease, false, false, err
	}
	return b.take(ctx, "relock", req, &old)
}

// errYielded is a node's answer to a relock that released old and kept the
// key for the owners waiting for it. It counts as NodeTaken: the node does
// not hold the key for this attempt.
var errYielded = errors.New("redlock: released for waiting owners")

// take is Acquire (old nil) and Relock (old non-nil): the fan-out, the
// quorum decision, the fencing token, the validity check and the cleanup of
// an attempt that did not get the key. wanted and queued are set only for
// a relock (see Relock).
func (b *Backend) take(ctx context.Context, op string, req ctxlock.AcquireRequest, old *ctxlock.Lease) (_ ctxlock.Lease, wanted, queued bool, _ error) {
	if err := b.ready(ctx); err != nil {
		return ctxlock.Lease{}, false, false, err
	}
	defer b.exit()
	if req.TTL <= 0 {
		return ctxlock.Lease{}, false, false, fmt.Errorf("redlock: %s %q: %w: TTL %v", op, req.Key, ctxlock.ErrInvalidOption, req.TTL)
	}
	timeout := b.nodeTimeout(req.TTL, req.Timeout)
	nreq := req
	nreq.Timeout = timeout
	// req.Waiter queues where the key is refused, and leaves a node's queue
	// where it takes the key. The nodes only hint (goredis.WithWaiterHints)
	// and order their queues by waiter id, so that the first waiter is the
	// same on every node. An attempt that fails gives the key back with
	// goredis.Backend.Requeue, which keeps the waiter's place (see
	// releaseAfterFailure); one that wins takes the waiter out of the queues
	// of the nodes that refused it (see places).
	n := len(b.nodes)
	var pl places
	t0 := time.Now()
	calls := b.attempts.start(req.Key, n)
	fn := startFan(b, ctx, timeout, nil, acquired{err: errNoAnswer}, func(ctx context.Context, i int) acquired {
		var r acquired
		defer b.attempts.end(i, req.Key, calls[i])
		if old == nil {
			r.lease, r.err = b.nodes[i].Acquire(ctx, nreq)
		} else {
			var yielded bool
			r.lease, yielded, r.queued, r.err = b.nodes[i].Relock(ctx, *old, nreq)
			switch {
			case yielded && r.err == nil:
				r.err = errYielded
			case r.err != nil && !errors.Is(r.err, ctxlock.ErrHeld):
				// Unknown outcome: make sure old does not linger here.
				b.releaseLater(ctx, i, *old)
			}
		}
		if req.Waiter != "" && queues(old, r.err) && pl.queuedOn(i) {
			// Queued here after the attempt won on a quorum.
			b.dequeueOn(ctx, req.Key, req.Waiter, []int{i})
		}
		return r
	})
	// Stop at the quorum: slower nodes cannot change a grant (if they grant
	// too, the lease is on them as well, and Extend and Release cover every
	// node). A refusal or a yield waits for every node: all must be released.
	fn.until(func(rs []acquired) bool { return granted(acquiredErrs(rs)) })
	leases, errs := make([]ctxlock.Lease, n), acquiredErrs(fn.res)
	for i, r := range fn.res {
		leases[i] = r.lease
	}
	t := tallyOf(errs)
	// The attempt gives up at t0 + timeout (see Acquire): what follows the
	// fan-out gets the time left.
	deadline := t0.Add(timeout)
	if granted(errs) {
		token, err := b.fence(ctx, op, req.Key, timeLeft(deadline), leases, errs)
		if err == nil {
			v := Validity(req.TTL, time.Since(t0), b.opts.drift)
			if v > 0 {
				if req.Waiter != "" {
					b.dequeueWinner(ctx, req.Key, req.Waiter, &pl)
				}
				return ctxlock.Lease{Key: req.Key, Owner: req.Owner, Token: token}, false, false, nil
			}
			qe := b.quorumError(op, req.Key, errs, true)
			qe.Validity = v
			err = qe
		}
		// Release everywhere, after the stragglers answered (a release
		// overtaking an acquire on a node would leave the lease there).
		fn.all()
		errs = acquiredErrs(fn.res)
		// The error is transient: the Manager releases the lease again
		// where this fails, so the attempt need not wait past its time.
		_ = b.releaseAfterFailure(ctx, req, errs, b.placed(req.Waiter, old, errs), deadline)
		return ctxlock.Lease{}, false, false, err
	}
	// A refusal waits for the give-back's answers (for one more per-node
	// timeout), even past req.Timeout: only a failed one makes it a fault.
	if err := b.releaseAfterFailure(ctx, req, errs, b.placed(req.Waiter, old, errs), time.Time{}); err != nil {
		// A node that granted the key may keep it for a whole TTL: not a
		// refusal (the Manager would leave it there), a fault, after which
		// the Manager releases the lease until that is confirmed.
		return ctxlock.Lease{}, false, false, ctxlock.Unavailable(fmt.Errorf("%w; giving back the lease it took failed on %w",
			b.quorumError(op, req.Key, errs, false), err))
	}
	// For a relock, the nodes that answered ok, yielded or refused no longer
	// hold old: there it is released or was gone already.
	oldGone := old == nil || t.ok+t.taken >= b.quorum
	switch v := t.verdict(); {
	case oldGone && old != nil && slices.ContainsFunc(errs, isYield):
		// Told its turn only if queued where it counts: on a quorum.
		behind := 0
		for _, r := range fn.res {
			if r.queued {
				behind++
			}
		}
		return ctxlock.Lease{}, true, behind >= b.quorum, nil
	case oldGone && v == byHolders:
		qe := b.quorumError(op, req.Key, errs, false)
		var rem []time.Duration
		for _, f := range qe.Failures {
			if f.Status == NodeTaken {
				rem = append(rem, f.Remaining)
			}
		}
		return ctxlock.Lease{}, false, false, fmt.Errorf("%w: %w", &ctxlock.HeldError{Remaining: heldRemaining(n, rem)}, qe)
	case v == byFailures:
		return ctxlock.Lease{}, false, false, b.quorumError(op, req.Key, errs, false)
	default:
		return ctxlock.Lease{}, false, false, b.quorumError(op, req.Key, errs, true)
	}
}

// queues reports whether a node's answer err to an acquire (old nil) or a
// relock of old may have queued the attempt's waiter there: a refused
// acquire, a relock that yielded, or an unknown outcome. A refused relock
// does not queue; it is not counted, although the waiter may have a place
// there from an earlier refused acquire (a relock comes first in a Lock
// call, and after a refusal only when its own release of the key is
// pending): dequeuing after every refused relock would cost uncontended
// loops a request whenever a slow node sees a relock before the previous
// one. Such a place lapses after goredis.WithWaiterKeep.
func queues(old *ctxlock.Lease, err error) bool {
	return err == errYielded || (old == nil && errors.Is(err, ctxlock.ErrHeld)) || statusOf(err) == NodeUnreachable
}

// placed reports whether waiter ("" none) may be queued on a node after a
// failed attempt with answers errs, remembering it when the attempt queued
// it.
func (b *Backend) placed(waiter string, old *ctxlock.Lease, errs []error) bool {
	if waiter == "" {
		return false
	}
	if slices.ContainsFunc(errs, func(err error) bool { return queues(old, err) }) {
		b.queued.Store(waiter, struct{}{})
		return true
	}
	_, ok := b.queued.Load(waiter)
	return ok
}

// places tracks where one attempt's waiter was queued (refused, or a
// yielding relock), while the nodes answer and after the attempt won.
type places struct {
	mu  sync.Mutex
	won bool
	on  []int
}

// queuedOn records that node i queued the waiter and reports whether the
// attempt has won already (the caller then dequeues it there).
func (p *places) queuedOn(i int) (won bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.on = append(p.on, i)
	return p.won
}

// win marks the attempt won and returns the nodes that queued its waiter.
func (p *places) win() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.won = true
	return slices.Clone(p.on)
}

// dequeueWinner takes waiter, whose attempt holds key on a quorum, out of
// the queues of the nodes that queued it in this attempt (a minority), in
// the background: elsewhere it left the queue as it took the key.
func (b *Backend) dequeueWinner(ctx context.Context, key, waiter string, pl *places) {
	b.queued.Delete(waiter)
	if on := pl.win(); len(on) > 0 {
		b.dequeueOn(ctx, key, waiter, on)
	}
}

// dequeueOn runs goredis.Backend.Dequeue on the nodes in indices at once,
// in the background, each bounded by DefaultReleaseTimeout.
func (b *Backend) dequeueOn(ctx context.Context, key, waiter string, indices []int) {
	startFan(b, context.WithoutCancel(ctx), DefaultReleaseTimeout, indices, false, func(ctx context.Context, i int) bool {
		_ = b.nodes[i].Dequeue(ctx, key, waiter) // a place left behind lapses (goredis.WithWaiterKeep)
		return true
	})
}

// granted reports whether an attempt's answers so far grant it: a quorum of
// nodes granted and none yielded.
func granted(errs []error) bool {
	return tallyOf(errs).verdict() == reached && !slices.ContainsFunc(errs, isYield)
}

func isYield(err error) bool { return err == errYielded }

// releaseLater releases lease on node i in the background, with a context
// that outlives the caller's cancellation, bounded by DefaultReleaseTimeout:
// no caller waits for it, and the node it goes to was too slow for the
// operation's own per-node timeout just now.
func (b *Backend) releaseLater(ctx context.Context, i int, lease ctxlock.Lease) {
	b.inflight.Go(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DefaultReleaseTimeout)
		defer cancel()
		b.releaseOnNode(ctx, i, []ctxlock.Lease{lease})
	})
}

// releaseOnNode releases leases on node i, and has those whose release
// failed with a transient error sent again (retryRelease).
func (b *Backend) releaseOnNode(ctx context.Context, i int, leases []ctxlock.Lease) []error {
	errs := b.nodes[i].Release(ctx, leases)
	b.retryRelease(i, leases, errs)
	return errs
}

// retryRelease queues, for node i, the leases whose release there (errs,
// one per lease) failed with a transient error, and starts the node's
// retrier if it is not running. A release that gives up on a node whose
// outcome is unknown (it did not answer in time) would otherwise leave the
// lease there for its TTL: harmless alone (a minority), but two such
// leftovers of different holds on two of three nodes keep every owner from
// a quorum until they lapse. The retrier sends the node's pending releases
// in one pipeline, again after a back-off (50ms doubling to a second) while
// they fail, each for at most releaseRetryFor, and stops when none is left
// or the Backend is closed; Close sends what is left once (flushRetries).
func (b *Backend) retryRelease(i int, leases []ctxlock.Lease, errs []error) {
	if b.retries == nil {
		return
	}
	r := &b.retries[i]
	until := time.Now().Add(releaseRetryFor)
	r.mu.Lock()
	for j, err := range errs {
		if errors.Is(err, ctxlock.ErrUnavailable) {
			r.pending = append(r.pending, retryLease{leases[j], until})
		}
	}
	if over := len(r.pending) - maxReleaseRetries; over > 0 {
		r.pending = slices.Delete(r.pending, 0, over)
	}
	start := !r.running && len(r.pending) > 0 && !b.closed.Load()
	if start {
		r.running = true
	}
	r.mu.Unlock()
	if start {
		b.inflight.Go(func() { b.retrier(i) })
	}
}

// retrier is node i's goroutine of retryRelease.
func (b *Backend) retrier(i int) {
	r := &b.retries[i]
	delay := 50 * time.Millisecond
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		select {
		case <-b.done:
			r.mu.Lock()
			r.running = false // what is pending, Close sends (flushRetries)
			r.mu.Unlock()
			return
		case <-t.C:
		}
		batch := r.take()
		var failed []retryLease
		if len(batch) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), DefaultReleaseTimeout)
			errs := b.nodes[i].Release(ctx, leasesOf(batch))
			cancel()
			for j, err := range errs {
				if errors.Is(err, ctxlock.ErrUnavailable) {
					failed = append(failed, batch[j])
				}
			}
		}
		r.mu.Lock()
		r.pending = append(failed, r.pending...)
		if len(r.pending) == 0 {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		if len(failed) > 0 {
			delay = min(2*delay, time.Second)
		} else {
			delay = 50 * time.Millisecond
		}
		t.Reset(delay)
	}
}

// acquired is one node's answer to an acquire.
type acquired struct {
	lease  ctxlock.Lease
	err    error
	queued bool // a relock yielded and queued the waiter behind others
}

func acquiredErrs(rs []acquired) []error {
	errs := make([]error, len(rs))
	for i, r := range rs {
		errs[i] = r.err
	}
	return errs
}

// fence returns the hold's token, the largest counter among the granting
// nodes, after raising the counters of granting nodes that lag behind it, so
// that a quorum of nodes holds a counter ≥ the token. A failed raise counts
// its node out; errs is updated so.
func (b *Backend) fence(ctx context.Context, op, key string, timeout time.Duration, leases []ctxlock.Lease, errs []error) (uint64, error) {
	tokens := make([]uint64, 0, len(leases))
	for i, err := range errs {
		if err == nil {
			tokens = append(tokens, leases[i].Token)
		}
	}
	token := maxToken(tokens)
	var lagging []int
	for i, err := range errs {
		if err == nil && leases[i].Token < token {
			lagging = append(lagging, i)
		}
	}
	if len(lagging) == 0 {
		return token, nil
	}
	_, fenceKey, _ := b.Keys(key)
	args := []any{token}
	if ttl, on := b.nodes[0].ClockTokens(); on {
		// The raised counters expire as the nodes' own do.
		ms := ttl.Milliseconds()
		if ttl%time.Millisecond != 0 {
			ms++
		}
		args = append(args, ms)
	}
	b.each(ctx, timeout, lagging, func(ctx context.Context, i int) {
		if err := raiseScript.Run(ctx, b.clients[i], []string{fenceKey}, args...).Err(); err != nil {
			errs[i] = ctxlock.Unavailable(fmt.Errorf("redlock: raise fencing counter of %q to %d: %w", key, token, err))
		}
	})
	if tallyOf(errs).verdict() != reached {
		return 0, b.quorumError(op, key, errs, true)
	}
	return token, nil
}

// releaseAfterFailure releases (owner-checked) a failed attempt's lease on
// every node that granted it or whose outcome is unknown, at once, with a
// context that outlives the caller's cancellation, each bounded by
// DefaultReleaseTimeout rather than the attempt's per-node timeout: a node
// whose answer came too late for the attempt would mostly miss that bound
// again, and its give-back would fail and be retried, the lease left there
// meanwhile (under load, thousands per minute). Where the attempt was
// granted and its waiter is queued (requeue), it uses
// goredis.Backend.Requeue, which puts req.Waiter back in its place in the
// node's queue: it stays the first waiter wherever it was, and a node it
// frees for another first waiter tells that one.
//
// It waits for the nodes known to have granted, until deadline at most (a
// zero deadline: for the attempt's per-node timeout), and
// returns an error naming those where the release failed or had not
// answered by then; the release on nodes that did not answer the acquire
// goes on in the background.
func (b *Backend) releaseAfterFailure(ctx context.Context, req ctxlock.AcquireRequest, errs []error, requeue bool, deadline time.Time) error {
	var idx []int
	for i, err := range errs {
		if s := statusOf(err); s == NodeOK || s == NodeUnreachable {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return nil
	}
	lease := ctxlock.Lease{Key: req.Key, Owner: req.Owner}
	fn := startFan(b, context.WithoutCancel(ctx), DefaultReleaseTimeout, idx, errNoAnswer, func(ctx context.Context, i int) error {
		if errs[i] != nil || !requeue {
			// Not queued; or an unknown outcome, released in the background,
			// maybe after the Lock call left the queues, so it must not queue
			// the waiter again (its next refusal puts it back in its place
			// by id).
			return errors.Join(b.releaseOnNode(ctx, i, []ctxlock.Lease{lease})...)
		}
		return b.nodes[i].Requeue(ctx, lease, req.Waiter, req.TTL)
	})
	if deadline.IsZero() {
		deadline = time.Now().Add(b.nodeTimeout(req.TTL, req.Timeout))
	}
	wctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	_ = fn.untilDone(wctx, func(done []error) bool {
		for i, err := range errs {
			if err == nil && done[i] == errNoAnswer {
				return false
			}
		}
		return true
	})
	var failed []error
	for i, err := range errs {
		if err == nil && fn.res[i] != nil {
			failed = append(failed, fmt.Errorf("node %d: %w", i, fn.res[i]))
		}
	}
	return errors.Join(failed...)
}

// timeLeft returns the time until deadline, at least a millisecond (a
// per-node timeout of 0 would mean none).
func timeLeft(deadline time.Time) time.Duration {
	return max(time.Until(deadline), time.Millisecond)
}

// batch runs op (one pipeline per node for all leases) on every node in
// parallel and returns the results per lease per node: res[lease][node]. It
// returns as soon as every lease succeeded on a quorum of nodes (slower
// nodes then finish in the background), else when every node answered.
// contended (nil when none) has per lease whether a node that answered
// reported it contended (op's second result, see
// goredis.Backend.ReleaseContended).
func (b *Backend) batch(ctx context.Context, timeout time.Duration, leases []ctxlock.Lease, op func(ctx context.Context, i int) ([]error, []bool)) (res [][]error, contended []bool) {
	type answer struct {
		ok        bool
		errs      []error
		contended []bool
	}
	fn := startFan(b, ctx, timeout, nil, answer{}, func(ctx context.Context, i int) answer {
		errs, contended := op(ctx, i)
		return answer{true, errs, contended}
	})
	valid := func(a answer) bool { return a.ok && (a.errs == nil || len(a.errs) == len(leases)) }
	fn.until(func(rs []answer) bool {
		// Count per lease the nodes that answered it with success.
		ok := make([]int, len(leases))
		for _, a := range rs {
			if !valid(a) {
				continue
			}
			for j := range leases {
				if a.errs == nil || a.errs[j] == nil {
					ok[j]++
				}
			}
		}
		for _, c := range ok {
			if c < b.quorum {
				return false
			}
		}
		return true
	})
	res = make([][]error, len(leases))
	for j := range leases {
		res[j] = make([]error, len(b.nodes))
		for i, a := range fn.res {
			switch {
			case !a.ok:
				res[j][i] = errNoAnswer
			case a.errs == nil:
			case len(a.errs) != len(leases):
				res[j][i] = ctxlock.Unavailable(fmt.Errorf("redlock: node %d returned %d results for %d leases", i, len(a.errs), len(leases)))
			default:
				res[j][i] = a.errs[j]
			}
			if res[j][i] == nil && j < len(a.contended) && a.contended[j] {
				if contended == nil {
					contended = make([]bool, len(leases))
				}
				contended[j] = true
			}
		}
	}
	return res, contended
}

// Extend implements ctxlock.Backend: one pipeline per node, all nodes at
// once, each bounded by the per-node timeout (a share of ttl, see
// WithTimeoutFactor); it returns as soon as a quorum extended every lease.
// Per lease it reports nil when a quorum extended it;
// an error matching ctxlock.ErrLost (wrapping a *QuorumError) when it can
// no longer be confirmed by a quorum even if every unreachable node still
// had it — the lease is then released at once on the nodes that still have
// it (and, in the background, on those that did not answer, which may have
// extended it), since a lock held on fewer than a quorum protects nothing; and a
// *QuorumError matching ctxlock.ErrUnavailable otherwise.
func (b *Backend) Extend(ctx context.Context, leases []ctxlock.Lease, ttl time.Duration) []error {
	if len(leases) == 0 {
		return nil
	}
	if err := b.ready(ctx); err != nil {
		return fill(len(leases), err)
	}
	defer b.exit()
	if ttl <= 0 {
		// Bad input, not lost leases (every node would refuse it, and a
		// refusal by a quorum reads as a loss).
		errs := make([]error, len(leases))
		for i, l := range leases {
			errs[i] = fmt.Errorf("redlock: extend %q: %w: TTL %v", l.Key, ctxlock.ErrInvalidOption, ttl)
		}
		return errs
	}
	timeout := b.nodeTimeout(ttl, 0)
	res, _ := b.batch(ctx, timeout, leases, func(ctx context.Context, i int) ([]error, []bool) {
		return b.nodes[i].Extend(ctx, leases, ttl), nil
	})
	out := make([]error, len(leases))
	var lost, unknown []ctxlock.Lease
	var lostOn, unknownOn [][]int
	for j, errs := range res {
		var err error
		switch tallyOf(errs).verdict() {
		case reached:
			continue
		case byOutage:
			err = b.quorumError("extend", leases[j].Key, errs, true)
		default:
			err = fmt.Errorf("%w: %w", ctxlock.ErrLost, b.quorumError("extend", leases[j].Key, errs, false))
			var on, maybe []int
			for i, e := range errs {
				switch statusOf(e) {
				case NodeOK:
					on = append(on, i)
				case NodeUnreachable:
					// It may have extended the lease there.
					maybe = append(maybe, i)
				}
			}
			if len(on) > 0 {
				lost = append(lost, leases[j])
				lostOn = append(lostOn, on)
			}
			if len(maybe) > 0 {
				unknown = append(unknown, leases[j])
				unknownOn = append(unknownOn, maybe)
			}
		}
		out[j] = err
	}
	if len(unknown) > 0 {
		// Where the outcome is unknown the node may be slow to answer: in
		// the background (Close waits for it), with a release's bound.
		rctx := context.WithoutCancel(ctx)
		b.inflight.Go(func() { b.releaseOn(rctx, DefaultReleaseTimeout, unknown, unknownOn) })
	}
	if len(lost) > 0 {
		b.releaseOn(context.WithoutCancel(ctx), timeout, lost, lostOn)
	}
	return out
}

// releaseOn releases lost leases on the nodes that still had them.
func (b *Backend) releaseOn(ctx context.Context, timeout time.Duration, leases []ctxlock.Lease, on [][]int) {
	perNode := make([][]ctxlock.Lease, len(b.nodes))
	var idx []int
	for j, nodes := range on {
		for _, i := range nodes {
			if perNode[i] == nil {
				idx = append(idx, i)
			}
			perNode[i] = append(perNode[i], leases[j])
		}
	}
	b.each(ctx, timeout, idx, func(ctx context.Context, i int) {
		b.releaseOnNode(ctx, i, perNode[i])
	})
}

// Release implements ctxlock.Backend: owner-checked release on every node at
// once (one pipeline per node), each bounded by the caller's deadline and at
// most DefaultReleaseTimeout; it returns as soon as a quorum released every
// lease, and slower nodes finish in the background. Per lease it reports nil once a quorum of
// nodes released it (or no longer had it): a quorum of nodes is then free
// for others. Where a node's release fails with a transient error (it did
// not answer in time, say), the release is sent there again in the
// background, after a back-off (50ms doubling to a second), for up to a
// minute or until Close, which sends it once more; the lease would
// otherwise stay there until its TTL.
// Otherwise it returns a *QuorumError (matching ctxlock.ErrUnavailable
// unless permanent errors caused it), and the Manager retries. On each node
// the release first waits for that node's acquires and relocks of the key
// that had started and not yet returned (each bounded by its per-node
// timeout), so that a straggling acquire cannot take the key there after
// the release.
func (b *Backend) Release(ctx context.Context, leases []ctxlock.Lease) []error {
	errs, _ := b.ReleaseContended(ctx, leases)
	return errs
}

// ReleaseContended implements ctxlock.ContentionReporter: Release, also
// reporting per lease whether any node that answered before it returned
// (a quorum at least, when it succeeded) released it with the key's wanted
// mark set, that is, whether another owner was refused by that node while
// the lease held it. One node is enough: an acquire by another owner is
// sent to every node and marks each one where the lease held it, so a
// quorum rule would only miss the marks on nodes that answered late or that
// the other owner could not reach, while any mark means an owner wanted the
// key. Relock decides on yields by the same rule.
func (b *Backend) ReleaseContended(ctx context.Context, leases []ctxlock.Lease) (errs []error, contended []bool) {
	if len(leases) == 0 {
		return nil, nil
	}
	if err := b.ready(ctx); err != nil {
		return fill(len(leases), err), nil
	}
	defer b.exit()
	// Slow nodes finish their release in the background, whatever happens
	// to the caller's context.
	res, contended := b.batch(context.WithoutCancel(ctx), min(DefaultReleaseTimeout, untilDeadline(ctx)), leases, func(ctx context.Context, i int) ([]error, []bool) {
		ctx, cancel := b.afterAttempts(ctx, i, len(leases), func(j int) string { return leases[j].Key })
		defer cancel()
		errs, contended := b.nodes[i].ReleaseContended(ctx, leases)
		b.retryRelease(i, leases, errs)
		return errs, contended
	})
	errs = make([]error, len(leases))
	for j, nerrs := range res {
		t := tallyOf(nerrs)
		if t.verdict() == reached {
			continue
		}
		errs[j] = b.quorumError("release", leases[j].Key, nerrs, t.n-t.failed >= t.quorum)
		if contended != nil {
			contended[j] = false // reported only with a successful release
		}
	}
	return errs, contended
}

// Watch implements ctxlock.Backend: it watches key on every node (each
// node's backend keeps one shared subscription) and merges their wake-ups
// into one channel, so a release published by any node wakes the waiter.
// It returns once a quorum of nodes confirmed the subscription (or gave up
// waiting, see goredis.WithSubscribeWait): a release succeeds on a quorum
// and publishes on each of those nodes, and two quorums share a node, so no
// release is missed because of a slow or frozen minority. stop stops every
// node's watch without waiting. After Close, Watch returns a nil channel.
func (b *Backend) Watch(key string) (released <-chan struct{}, stop func()) {
	return merge(b, struct{}{}, func(node *goredis.Backend) (<-chan struct{}, func()) {
		return node.Watch(key)
	})
}

// WatchWaiter implements ctxlock.WaiterQueue. Every node keeps a waiter
// queue of the key that only hints (goredis.WithWaiterHints): a refused
// Acquire or a yielding Relock with req.Waiter queues it on the nodes that
// refused it, in the order of waiter ids, and a release (or a Leave of the
// first waiter, with the key free) tells each node's first live waiter, and
// no one else, that the key is free there (with nobody queued there, the
// waiter the node's wanted mark names instead, such as one whose relock the
// node refused, which does not queue). WatchWaiter merges those hints
// from every node into one channel of zero Handoffs: the backend never
// grants a key on its own, the waiter takes it with an Acquire that needs a
// quorum as always. A node keeps the free key for the waiter it told for a
// short window only (refusing others with that window as the remaining
// time), so a waiter that does not come delays the key briefly, and since
// every node orders its queue alike, one release wakes one waiter instead of
// every waiting process. It returns, and reports a Close, as Watch does.
func (b *Backend) WatchWaiter(key, waiter string) (turns <-chan ctxlock.Handoff, stop func()) {
	return merge(b, ctxlock.Handoff{}, func(node *goredis.Backend) (<-chan ctxlock.Handoff, func()) {
		return node.WatchWaiter(key, waiter)
	})
}

// merge runs watch on every node and forwards each message of theirs as
// signal, without blocking, on one channel (capacity one: pending signals
// merge). It returns once a quorum of nodes' watches are in place.
func merge[T any](b *Backend, signal T, watch func(node *goredis.Backend) (<-chan T, func())) (<-chan T, func()) {
	if b.usable() != nil || !b.enter() {
		return nil, func() {}
	}
	defer b.exit()
	out := make(chan T, 1)
	done := make(chan struct{})
	ready := make(chan struct{}, len(b.nodes))
	for _, node := range b.nodes {
		b.inflight.Go(func() {
			ch, st := watch(node)
			ready <- struct{}{}
			if st != nil {
				defer st()
			}
			for {
				select {
				case <-ch: // a nil channel (closed node backend) never fires
					select {
					case out <- signal:
					default:
					}
				case <-done:
					return
				case <-b.done:
					return
				}
			}
		})
	}
	for range b.quorum {
		<-ready
	}
	return out, sync.OnceFunc(func() { close(done) })
}

// afterAttempts waits until node i has no acquire or relock of keys key(j),
// j < n, whose goroutine had started and not yet returned (see attempts),
// before a release or leave there, and returns the context to send that
// with: ctx, or, when the wait used up ctx's time, a fresh one bounded by
// DefaultReleaseTimeout, since the node needs it after the wait and it
// goes on in the background past the quorum. cancel must be called.
func (b *Backend) afterAttempts(ctx context.Context, i, n int, key func(j int) string) (context.Context, context.CancelFunc) {
	waited := false
	for j := range n {
		waited = b.attempts.wait(i, key(j)) || waited
	}
	if waited && ctx.Err() != nil {
		return context.WithTimeout(context.WithoutCancel(ctx), DefaultReleaseTimeout)
	}
	return ctx, func() {}
}

// Leave implements ctxlock.WaiterQueue: it takes waiter out of key's queue
// on every node at once, each bounded by the caller's deadline and at most
// DefaultReleaseTimeout, and returns once a quorum of nodes answered
// (slower ones finish in the background), or with ctx's error once ctx is
// done (the nodes' calls go on in the background). Where the key is free,
// the node's next waiter is told (see WatchWaiter). It reports a
// *QuorumError when fewer than a quorum of nodes succeeded; a place left
// behind on a node lapses after goredis.WithWaiterKeep anyway. Like
// Release, it waits on each node for that node's attempts on key that had
// started, so that a late refusal does not queue waiter there again.
func (b *Backend) Leave(ctx context.Context, key, waiter string) error {
	if err := b.ready(ctx); err != nil {
		return err
	}
	defer b.exit()
	b.queued.Delete(waiter)
	fn := startFan(b, context.WithoutCancel(ctx), min(DefaultReleaseTimeout, untilDeadline(ctx)), nil, errNoAnswer, func(ctx context.Context, i int) error {
		ctx, cancel := b.afterAttempts(ctx, i, 1, func(int) string { return key })
		defer cancel()
		return b.nodes[i].Leave(ctx, key, waiter)
	})
	// The caller stops waiting when its ctx ends (a Manager's Close cuts
	// leaves short so); the nodes' leaves go on, bounded by the timeout.
	if err := fn.untilDone(ctx, func(errs []error) bool { return tallyOf(errs).ok >= b.quorum }); err != nil {
		return fmt.Errorf("redlock: leave %q: %w", key, err)
	}
	if t := tallyOf(fn.res); t.ok < b.quorum {
		return b.quorumError("leave", key, fn.res, t.n-t.failed >= t.quorum)
	}
	return nil
}

// Health implements ctxlock.Backend. It asks every node's backend at once
// and reports each node's conditions prefixed with its index and address.
// err (a *QuorumError matching ctxlock.ErrUnavailable) is non-nil when fewer
// than a quorum of nodes are healthy; a minority of unhealthy nodes is
// reported only as conditions.
func (b *Backend) Health(ctx context.Context) (conditions []string, err error) {
	if err := b.ready(ctx); err != nil {
		if errors.Is(err, ErrClosed) {
			return []string{"redlock: closed"}, err
		}
		return []string{"redlock: no nodes"}, err
	}
	defer b.exit()
	n := len(b.nodes)
	conds := make([][]string, n)
	errs := make([]error, n)
	// The nodes' checks end a little before ctx does, so that the tally
	// (a frozen minority is only a condition) is made while the caller
	// still listens: a Manager's Health returns when ctx ends.
	timeout := DefaultReleaseTimeout
	if d, ok := ctx.Deadline(); ok {
		left := time.Until(d)
		timeout = max(min(timeout, left-min(left/10, 50*time.Millisecond)), time.Millisecond)
	}
	b.each(ctx, timeout, nil, func(ctx context.Context, i int) {
		conds[i], errs[i] = b.nodes[i].Health(ctx)
		if errs[i] != nil {
			errs[i] = ctxlock.Unavailable(errs[i]) // any unhealthy node counts as unreachable
		}
	})
	for i, cs := range conds {
		for _, c := range cs {
			conditions = append(conditions, fmt.Sprintf("redlock: node %d (%s): %s", i, b.addrs[i], c))
		}
	}
	t := tallyOf(errs)
	if t.ok < n {
		conditions = append(conditions, fmt.Sprintf("redlock: %d of %d nodes healthy (quorum %d)", t.ok, n, b.quorum))
	}
	sort.Strings(conditions)
	if t.ok < b.quorum {
		return conditions, b.quorumError("health", "", errs, true)
	}
	return conditions, nil
}

// Close waits for node calls still finishing in the background (each
// bounded by its per-node timeout, a release by DefaultReleaseTimeout),
// sends once more the releases still queued to be retried (see Release;
// each node's at once, within DefaultReleaseTimeout), ends
// every watch and stops every node backend's subscription. It does not
// close the clients. Close the Managers first. It is idempotent. Calls in
// progress when it begins finish first; later calls fail with ErrClosed.
func (b *Backend) Close() error {
	b.life.Lock()
	b.closed.Store(true)
	var calls chan struct{}
	if b.active > 0 {
		if b.drained == nil {
			b.drained = make(chan struct{})
		}
		calls = b.drained
	}
	b.life.Unlock()
	b.once.Do(func() {
		if b.done != nil { // nil in the zero Backend
			close(b.done)
		}
	})
	if calls != nil {
		<-calls // the calls in progress, each bounded by its timeouts
	}
	b.inflight.Wait() // bounded by the calls' timeouts, and by stopped watches
	b.flushRetries()
	var errs []error
	for _, n := range b.nodes {
		errs = append(errs, n.Close())
	}
	return errors.Join(errs...)
}

// flushRetries sends, once, the releases still queued for retry when the
// Backend closes (retryRelease: those of calls that failed just before, or
// while Close waited for them), one pipeline per node, at once, each
// bounded by DefaultReleaseTimeout: a lease whose release a node lost just
// before a shutdown would otherwise stay there for its TTL.
func (b *Backend) flushRetries() {
	var wg sync.WaitGroup
	for i := range b.retries {
		if batch := b.retries[i].take(); len(batch) > 0 {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), DefaultReleaseTimeout)
				defer cancel()
				_ = b.nodes[i].Release(ctx, leasesOf(batch))
			})
		}
	}
	wg.Wait()
}

// take empties r, returning the releases still within their retry time.
func (r *releaseRetries) take() []retryLease {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	batch := slices.DeleteFunc(r.pending, func(p retryLease) bool { return now.After(p.until) })
	r.pending = nil
	return batch
}

func leasesOf(rs []retryLease) []ctxlock.Lease {
	leases := make([]ctxlock.Lease, len(rs))
	for j, p := range rs {
		leases[j] = p.lease
	}
	return leases
}

// fill returns n copies of err.
func fill(n int, err error) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
}

// untilDeadline returns how long ctx has left, or DefaultReleaseTimeout when
// it has no deadline.
func untilDeadline(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), time.Millisecond)
	}
	return DefaultReleaseTimeout
}
