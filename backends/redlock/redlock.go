package redlock

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
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
// (goredis.WithKeyPrefix, goredis.WithHealthCheckInterval, ...).
func WithNodeOptions(opts ...goredis.Option) Option {
	return func(o *options) { o.nodeOpts = append(o.nodeOpts, opts...) }
}

// Backend is a ctxlock.Backend that holds a lease only while a quorum of N
// independent Redis masters agree (Redlock). Each node is served by a
// *goredis.Backend, so the scripts, pipelines, error classification and
// release subscription are those of the goredis package. It is safe for
// concurrent use. See the package documentation for the algorithm and the
// limits of its fencing tokens.
type Backend struct {
	nodes   []*goredis.Backend
	clients []redis.UniversalClient
	addrs   []string
	quorum  int
	opts    options
}

var (
	_ ctxlock.Backend      = (*Backend)(nil)
	_ ctxlock.BackendNamer = (*Backend)(nil)
)

// New returns a Backend over clients, one per independent Redis master (not
// replicas of each other, not one cluster). Their number must be odd and at
// least 3; otherwise, or when a client is nil or an option is invalid, New
// returns an error matching ctxlock.ErrInvalidOption.
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
	if n < 3 || n%2 == 0 {
		return nil, fmt.Errorf("%w: redlock needs an odd number of at least 3 independent nodes, got %d", ctxlock.ErrInvalidOption, n)
	}
	b := &Backend{
		nodes:   make([]*goredis.Backend, n),
		clients: clients,
		addrs:   make([]string, n),
		quorum:  Quorum(n),
		opts:    o,
	}
	for i, c := range clients {
		if c == nil {
			return nil, fmt.Errorf("%w: redlock node %d: nil client", ctxlock.ErrInvalidOption, i)
		}
		b.addrs[i] = addrOf(c, i)
	}
	for i, c := range clients {
		b.nodes[i] = goredis.New(c, o.nodeOpts...)
	}
	return b, nil
}

func addrOf(c redis.UniversalClient, i int) string {
	switch c := c.(type) {
	case *redis.Client:
		return c.Options().Addr
	case *redis.ClusterClient:
		return strings.Join(c.Options().Addrs, ",")
	}
	return fmt.Sprintf("node%d", i)
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
	return b.nodes[0].Keys(key)
}

// each runs f for every node in indices (every node when nil) in parallel,
// each with ctx bounded by timeout (when > 0), and waits for all of them.
func (b *Backend) each(ctx context.Context, timeout time.Duration, indices []int, f func(ctx context.Context, i int)) {
	run := func(i int) {
		c := ctx
		if timeout > 0 {
			var cancel context.CancelFunc
			c, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		f(c, i)
	}
	var wg sync.WaitGroup
	if indices == nil {
		for i := range b.nodes {
			wg.Go(func() { run(i) })
		}
	} else {
		for _, i := range indices {
			wg.Go(func() { run(i) })
		}
	}
	wg.Wait()
}

func statusOf(err error) NodeStatus {
	switch {
	case err == nil:
		return NodeOK
	case errors.Is(err, ctxlock.ErrHeld), errors.Is(err, ctxlock.ErrLost):
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
// req.Timeout), and waits for all of them. The lease is granted when a
// quorum granted it and the validity left, TTL − elapsed − drift, is
// positive. Its token is the largest of the granting nodes' counters; nodes
// whose counter lagged are raised to it (one more round trip, only when the
// counters differ), and a quorum of nodes must carry the token.
//
// Otherwise the lease is released at once on every node that granted it or
// did not answer, and Acquire returns: a *ctxlock.HeldError wrapping a
// *QuorumError when other owners hold the key on too many nodes (Remaining
// is when enough of them expire for a quorum to be free); a *QuorumError
// matching ctxlock.ErrUnavailable when unreachable nodes or slowness kept
// it from a quorum; a permanent *QuorumError otherwise.
func (b *Backend) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	if req.TTL <= 0 {
		return ctxlock.Lease{}, fmt.Errorf("redlock: acquire %q: %w: TTL %v", req.Key, ctxlock.ErrInvalidOption, req.TTL)
	}
	timeout := b.nodeTimeout(req.TTL, req.Timeout)
	nreq := req
	nreq.Timeout = timeout
	n := len(b.nodes)
	leases := make([]ctxlock.Lease, n)
	errs := make([]error, n)
	t0 := time.Now()
	b.each(ctx, timeout, nil, func(ctx context.Context, i int) {
		leases[i], errs[i] = b.nodes[i].Acquire(ctx, nreq)
	})
	t := tallyOf(errs)
	if t.verdict() == reached {
		token, err := b.fence(ctx, req.Key, timeout, leases, errs)
		if err == nil {
			v := Validity(req.TTL, time.Since(t0), b.opts.drift)
			if v > 0 {
				return ctxlock.Lease{Key: req.Key, Owner: req.Owner, Token: token}, nil
			}
			qe := b.quorumError("acquire", req.Key, errs, true)
			qe.Validity = v
			err = qe
		}
		b.releaseAfterFailure(ctx, req, errs)
		return ctxlock.Lease{}, err
	}
	b.releaseAfterFailure(ctx, req, errs)
	switch t.verdict() {
	case byHolders:
		qe := b.quorumError("acquire", req.Key, errs, false)
		var rem []time.Duration
		for _, f := range qe.Failures {
			if f.Status == NodeTaken {
				rem = append(rem, f.Remaining)
			}
		}
		return ctxlock.Lease{}, fmt.Errorf("%w: %w", &ctxlock.HeldError{Remaining: heldRemaining(n, rem)}, qe)
	case byFailures:
		return ctxlock.Lease{}, b.quorumError("acquire", req.Key, errs, false)
	default:
		return ctxlock.Lease{}, b.quorumError("acquire", req.Key, errs, true)
	}
}

// fence returns the hold's token, the largest counter among the granting
// nodes, after raising the counters of granting nodes that lag behind it, so
// that a quorum of nodes holds a counter ≥ the token. A failed raise counts
// its node out; errs is updated so.
func (b *Backend) fence(ctx context.Context, key string, timeout time.Duration, leases []ctxlock.Lease, errs []error) (uint64, error) {
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
	b.each(ctx, timeout, lagging, func(ctx context.Context, i int) {
		if err := raiseScript.Run(ctx, b.clients[i], []string{fenceKey}, token).Err(); err != nil {
			errs[i] = ctxlock.Unavailable(fmt.Errorf("redlock: raise fencing counter of %q to %d: %w", key, token, err))
		}
	})
	if tallyOf(errs).verdict() != reached {
		return 0, b.quorumError("acquire", key, errs, true)
	}
	return token, nil
}

// releaseAfterFailure releases (owner-checked) a failed attempt's lease on
// every node that granted it or whose outcome is unknown, at once, with a
// context that outlives the caller's cancellation but not the per-node
// timeout.
func (b *Backend) releaseAfterFailure(ctx context.Context, req ctxlock.AcquireRequest, errs []error) {
	var idx []int
	for i, err := range errs {
		if s := statusOf(err); s == NodeOK || s == NodeUnreachable {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return
	}
	lease := []ctxlock.Lease{{Key: req.Key, Owner: req.Owner}}
	b.each(context.WithoutCancel(ctx), b.nodeTimeout(req.TTL, req.Timeout), idx, func(ctx context.Context, i int) {
		b.nodes[i].Release(ctx, lease)
	})
}

// batch runs op (one pipeline per node for all leases) on every node in
// parallel and returns the results per lease per node: res[lease][node].
func (b *Backend) batch(ctx context.Context, timeout time.Duration, leases []ctxlock.Lease, op func(ctx context.Context, node *goredis.Backend) []error) [][]error {
	perNode := make([][]error, len(b.nodes))
	b.each(ctx, timeout, nil, func(ctx context.Context, i int) {
		perNode[i] = op(ctx, b.nodes[i])
	})
	res := make([][]error, len(leases))
	for j := range leases {
		res[j] = make([]error, len(b.nodes))
		for i, errs := range perNode {
			switch {
			case errs == nil:
			case len(errs) != len(leases):
				res[j][i] = ctxlock.Unavailable(fmt.Errorf("redlock: node %d returned %d results for %d leases", i, len(errs), len(leases)))
			default:
				res[j][i] = errs[j]
			}
		}
	}
	return res
}

// Extend implements ctxlock.Backend: one pipeline per node, all nodes at
// once, each bounded by the per-node timeout (a share of ttl, see
// WithTimeoutFactor). Per lease it reports nil when a quorum extended it;
// an error matching ctxlock.ErrLost (wrapping a *QuorumError) when it can
// no longer be confirmed by a quorum even if every unreachable node still
// had it — the lease is then released at once on the nodes that still have
// it, since a lock held on fewer than a quorum protects nothing; and a
// *QuorumError matching ctxlock.ErrUnavailable otherwise.
func (b *Backend) Extend(ctx context.Context, leases []ctxlock.Lease, ttl time.Duration) []error {
	if len(leases) == 0 {
		return nil
	}
	timeout := b.nodeTimeout(ttl, 0)
	res := b.batch(ctx, timeout, leases, func(ctx context.Context, node *goredis.Backend) []error {
		return node.Extend(ctx, leases, ttl)
	})
	var out []error
	var lost []ctxlock.Lease
	var lostOn [][]int
	for j, errs := range res {
		var err error
		switch tallyOf(errs).verdict() {
		case reached:
			continue
		case byOutage:
			err = b.quorumError("extend", leases[j].Key, errs, true)
		default:
			err = fmt.Errorf("%w: %w", ctxlock.ErrLost, b.quorumError("extend", leases[j].Key, errs, false))
			var on []int
			for i, e := range errs {
				if e == nil {
					on = append(on, i)
				}
			}
			if len(on) > 0 {
				lost = append(lost, leases[j])
				lostOn = append(lostOn, on)
			}
		}
		if out == nil {
			out = make([]error, len(leases))
		}
		out[j] = err
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
		b.nodes[i].Release(ctx, perNode[i])
	})
}

// Release implements ctxlock.Backend: owner-checked release on every node at
// once (one pipeline per node), each bounded by the caller's context and at
// most DefaultReleaseTimeout. Per lease it reports nil once a quorum of
// nodes released it (or no longer had it): a quorum of nodes is then free
// for others, and the nodes that did not answer drop the lease at its TTL.
// Otherwise it returns a *QuorumError (matching ctxlock.ErrUnavailable
// unless permanent errors caused it), and the Manager retries.
func (b *Backend) Release(ctx context.Context, leases []ctxlock.Lease) []error {
	if len(leases) == 0 {
		return nil
	}
	res := b.batch(ctx, DefaultReleaseTimeout, leases, func(ctx context.Context, node *goredis.Backend) []error {
		return node.Release(ctx, leases)
	})
	var out []error
	for j, errs := range res {
		t := tallyOf(errs)
		if t.verdict() == reached {
			continue
		}
		if out == nil {
			out = make([]error, len(leases))
		}
		out[j] = b.quorumError("release", leases[j].Key, errs, t.n-t.failed >= t.quorum)
	}
	return out
}

// Watch implements ctxlock.Backend: it watches key on every node (each
// node's backend keeps one shared subscription) and merges their wake-ups
// into one channel, so a release published by any node wakes the waiter.
// stop stops every node's watch. After Close, Watch returns a nil channel.
func (b *Backend) Watch(key string) (released <-chan struct{}, stop func()) {
	n := len(b.nodes)
	chans := make([]<-chan struct{}, n)
	stops := make([]func(), n)
	b.each(context.Background(), 0, nil, func(_ context.Context, i int) {
		chans[i], stops[i] = b.nodes[i].Watch(key)
	})
	stopAll := func() {
		for _, s := range stops {
			if s != nil {
				s()
			}
		}
	}
	done := make(chan struct{})
	cases := []reflect.SelectCase{{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(done)}}
	for _, ch := range chans {
		if ch != nil {
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ch)})
		}
	}
	if len(cases) == 1 {
		stopAll()
		return nil, func() {}
	}
	out := make(chan struct{}, 1)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		for {
			i, _, ok := reflect.Select(cases)
			if i == 0 {
				return
			}
			if !ok { // a closed node channel: never select it again
				cases[i].Chan = reflect.Zero(cases[i].Chan.Type())
			}
			select {
			case out <- struct{}{}:
			default:
			}
		}
	}()
	return out, sync.OnceFunc(func() {
		close(done)
		<-exited
		stopAll()
	})
}

// Health implements ctxlock.Backend. It asks every node's backend at once
// and reports each node's conditions prefixed with its index and address.
// err (a *QuorumError matching ctxlock.ErrUnavailable) is non-nil when fewer
// than a quorum of nodes are healthy; a minority of unhealthy nodes is
// reported only as conditions.
func (b *Backend) Health(ctx context.Context) (conditions []string, err error) {
	n := len(b.nodes)
	conds := make([][]string, n)
	errs := make([]error, n)
	b.each(ctx, DefaultReleaseTimeout, nil, func(ctx context.Context, i int) {
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

// Close stops every node backend's subscription and wakes every watcher. It
// does not close the clients. It is idempotent.
func (b *Backend) Close() error {
	var errs []error
	for _, n := range b.nodes {
		errs = append(errs, n.Close())
	}
	return errors.Join(errs...)
}
