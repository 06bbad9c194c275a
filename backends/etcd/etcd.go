package etcd

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/ctxlock/ctxlock"
)

// DefaultPrefix is the prefix of every key the Backend writes unless
// WithPrefix says otherwise.
const DefaultPrefix = "ctxlock/"

// maxTxnOps is etcd's default limit of operations in one transaction
// (--max-txn-ops): Extend reads a batch in transactions of at most this many
// keys.
const maxTxnOps = 128

// keepAliveStreams is how many LeaseKeepAlive streams a Backend keeps, and
// keepAliveChunk the smallest share of a batch that goes on a stream of its
// own.
const (
	keepAliveStreams = 4
	keepAliveChunk   = 128
)

// Bounds of one attempt, within the caller's context: an Extend gets a
// quarter of its TTL (at least minAttemptTimeout), a Release
// releaseAttemptTimeout.
const (
	minAttemptTimeout     = 100 * time.Millisecond
	releaseAttemptTimeout = time.Second
)

// An Extend's keep-alives and its read are each sent again (hedged) when
// they have not been answered a hedge delay after they left, up to
// extendCopies sends in all: see hedged and Backend.hedgeDelay.
const (
	minHedgeDelay = 20 * time.Millisecond
	extendCopies  = 3
)

// maxConcurrentRevokes bounds the LeaseRevoke calls one Release has in
// flight (they share the client's connection).
const maxConcurrentRevokes = 64

// endpointStatusTimeout bounds Health's status request to one endpoint:
// the client waits for a connection to a member that is down until its
// context ends, and one dead member must not hold up the report of the
// others.
const endpointStatusTimeout = 2 * time.Second

// Watch reconnection backoff.
const (
	watchRetryMin = 50 * time.Millisecond
	watchRetryMax = 2 * time.Second
)

// ErrClosed is returned by every call on a closed Backend.
var ErrClosed = errors.New("etcd: backend closed")

// Option configures New.
type Option func(*config)

type config struct{ prefix string }

// WithPrefix sets the prefix of every key the Backend writes (DefaultPrefix
// by default). Backends that lock the same keys must use the same prefix.
func WithPrefix(p string) Option { return func(c *config) { c.prefix = p } }

// Backend is a ctxlock.Backend on an etcd cluster. Make it with New.
type Backend struct {
	client     *clientv3.Client
	conn       *grpc.ClientConn // the client's
	leases     pb.LeaseClient   // on conn: grants with chosen IDs, batched keep-alives
	lockPrefix string           // prefix + "k/"
	metaPrefix string           // prefix + "m/"

	ctx    context.Context // ended by Close: stops the watch loop
	cancel context.CancelFunc

	mu        sync.Mutex
	closed    bool
	watchers  map[string]map[*watcher]struct{}   // by etcd key
	onDelete  map[*func(string, uint64)]struct{} // NotifyDeletes' functions
	watching  bool                               // the watch loop was started
	watchDone chan struct{}                      // closed when it returns
	watchErr  error                              // why the watch is not in force now; nil when it is

	keepAliveSlots chan struct{}      // one token per stream not in use (keepAliveStreams in all)
	keepAliveMu    sync.Mutex         // guards keepAliveFree
	keepAliveFree  []*keepAliveStream // streams not in use; the last freed is taken first, so that a lone caller keeps one stream

	lastRedial atomic.Int64 // when redial last cut gRPC's connect backoff short, in Unix nanoseconds
	readRTT    atomic.Int64 // smoothed round trip of Extend's ownership read (first sends answered), in nanoseconds; 0: none yet
	hedges     atomic.Int64 // hedges sent by Extend, for tests
}

type watcher struct{ ch chan struct{} }

var (
	_ ctxlock.Backend        = (*Backend)(nil)
	_ ctxlock.BackendNamer   = (*Backend)(nil)
	_ ctxlock.DeleteNotifier = (*Backend)(nil)
)

// New returns a Backend on client's cluster. The caller owns client: Close
// does not close it, and it must outlive the Backend.
func New(client *clientv3.Client, opts ...Option) (*Backend, error) {
	if client == nil {
		return nil, fmt.Errorf("etcd: %w: nil client", ctxlock.ErrInvalidOption)
	}
	cfg := config{prefix: DefaultPrefix}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	conn := client.ActiveConnection()
	b := &Backend{
		client:         client,
		conn:           conn,
		leases:         pb.NewLeaseClient(conn),
		lockPrefix:     cfg.prefix + "k/",
		metaPrefix:     cfg.prefix + "m/",
		watchers:       make(map[string]map[*watcher]struct{}),
		keepAliveSlots: make(chan struct{}, keepAliveStreams),
	}
	for range keepAliveStreams {
		b.keepAliveSlots <- struct{}{}
		b.keepAliveFree = append(b.keepAliveFree, &keepAliveStream{})
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return b, nil
}

// redialEvery is how often, at most, a Backend cuts gRPC's connect backoff
// short (redial).
const redialEvery = time.Second

// redial makes the client's connection try its endpoints again at once
// when it has none to send to (every connection attempt failed: gRPC's
// TRANSIENT_FAILURE), instead of after gRPC's connect backoff, which
// doubles (×1.6) from 1s up to 2 minutes while the cluster is away. Without
// it, a Manager locked again up to that long after a long outage ended (28s
// after a 150s outage of a single member, here); with it, as soon as a call
// finds the cluster back. The calls of Acquire, Extend, Release and Health
// redial, at most once per redialEvery per Backend: a connection attempt
// a second while the cluster is away and someone wants it.
func (b *Backend) redial() {
	if b.conn.GetState() != connectivity.TransientFailure {
		return
	}
	now := time.Now().UnixNano()
	last := b.lastRedial.Load()
	if now-last < int64(redialEvery) || !b.lastRedial.CompareAndSwap(last, now) {
		return
	}
	b.conn.ResetConnectBackoff()
}

// BackendName returns "etcd".
func (b *Backend) BackendName() string { return "etcd" }

// LockKey returns the etcd key that holds the lease of key (a full key, as
// the Manager passes it: namespace included).
func (b *Backend) LockKey(key string) string { return b.lockPrefix + key }

func (b *Backend) metaKey(key string) string { return b.metaPrefix + key }

// leaseID is the etcd lease of the hold of owner. Owners are unique per
// hold, so a hold's lease can be found (kept alive, revoked) from its owner
// alone, also for an attempt whose answer was lost. A 63-bit hash of two
// owners can collide; the second grant then fails (etcd refuses an existing
// ID), and its Lock reports an error instead of sharing a lease.
func leaseID(owner string) int64 {
	sum := sha256.Sum256([]byte(owner))
	id := int64(binary.BigEndian.Uint64(sum[:8]) >> 1)
	if id == 0 {
		id = 1
	}
	return id
}

// ttlSeconds is the lease TTL etcd is asked for: whole seconds, rounded up,
// so that a lease never lasts less than the Manager believes.
func ttlSeconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}

func (b *Backend) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// errClientClosed is the error of a call on a Backend whose client was
// closed first. Checked up front: clientv3's retry interceptor takes the
// closed connection's codes.Canceled for a context error and retries it a
// hundred times (about 2.5s) before it answers.
var errClientClosed = errors.New("etcd: the client is closed")

// closedErr returns ErrClosed when the Backend is closed, errClientClosed
// when its client is (both permanent), else nil.
func (b *Backend) closedErr() error {
	if b.isClosed() {
		return ErrClosed
	}
	if b.client.Ctx().Err() != nil {
		return errClientClosed
	}
	return nil
}

// Acquire takes req.Key for req.Owner: it grants the hold's lease, then
// puts the key with that lease if the key does not exist (one transaction).
// Two round trips; a refusal revokes the lease and asks for the holder's
// remaining TTL (a third, in parallel).
func (b *Backend) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	if err := b.closedErr(); err != nil {
		return ctxlock.Lease{}, err
	}
	b.redial()
	if req.TTL <= 0 {
		return ctxlock.Lease{}, fmt.Errorf("etcd: %w: TTL %v", ctxlock.ErrInvalidOption, req.TTL)
	}
	if req.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, req.Timeout)
		defer cancel()
	}
	id := leaseID(req.Owner)
	if _, err := b.leases.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: id, TTL: ttlSeconds(req.TTL)}); err != nil {
		if errors.Is(rpctypes.Error(err), rpctypes.ErrLeaseExist) {
			// Not ours (owners are unique per attempt): a hash collision.
			// Not ErrUnavailable, whose release would revoke the other
			// hold's lease.
			return ctxlock.Lease{}, fmt.Errorf("etcd: lease id %x of owner %q is taken (hash collision); try again", id, req.Owner)
		}
		return ctxlock.Lease{}, classify("grant", err)
	}
	k := b.LockKey(req.Key)
	put := []clientv3.Op{clientv3.OpPut(k, req.Owner, clientv3.WithLease(clientv3.LeaseID(id)))}
	if req.Metadata != "" {
		put = append(put, clientv3.OpPut(b.metaKey(req.Key), req.Metadata, clientv3.WithLease(clientv3.LeaseID(id))))
	}
	resp, err := b.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(put...).
		Else(clientv3.OpGet(k)).
		Commit()
	if err != nil {
		err = classify("acquire", err)
		if !errors.Is(err, ctxlock.ErrUnavailable) && ctx.Err() == nil {
			// Refused as such (no permission, a key too large): nothing
			// was put, and the Manager releases nothing, so give the lease
			// back now rather than leave it to lapse.
			_, _ = b.leases.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: id})
		}
		return ctxlock.Lease{}, err
	}
	if resp.Header == nil {
		return ctxlock.Lease{}, garbage("acquire: answer without a header")
	}
	if resp.Succeeded {
		if resp.Header.Revision <= 0 {
			return ctxlock.Lease{}, garbage(fmt.Sprintf("acquire: revision %d", resp.Header.Revision))
		}
		return ctxlock.Lease{Key: req.Key, Owner: req.Owner, Token: uint64(resp.Header.Revision)}, nil
	}
	var holder *mvccpb.KeyValue
	if len(resp.Responses) == 1 {
		if r := resp.Responses[0].GetResponseRange(); r != nil && len(r.Kvs) == 1 {
			holder = r.Kvs[0]
		}
	}
	// A transaction is atomic: a failed compare means the key exists, and
	// the read in the same transaction returns it; an answer without it
	// is garbage.
	if holder == nil {
		return ctxlock.Lease{}, garbage("acquire: refused without the holder")
	}
	return ctxlock.Lease{}, b.refused(ctx, id, holder)
}

// refused revokes the refused attempt's lease (nothing is attached to it)
// and reads the holder's remaining TTL, in parallel.
func (b *Backend) refused(ctx context.Context, id int64, holder *mvccpb.KeyValue) error {
	held := &ctxlock.HeldError{}
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = b.leases.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: id}) })
	if holder.Lease != 0 {
		if ttl, err := b.leases.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: holder.Lease}); err == nil && ttl.TTL > 0 {
			held.Remaining = time.Duration(ttl.TTL) * time.Second
		}
	}
	wg.Wait()
	return held
}

// Extend keeps alive the lease of every hold whose key its owner still
// holds. etcd's keep-alive renews a lease for the TTL it was granted with
// (the Manager always extends with the TTL it acquired with); an Extend
// for a longer TTL than a lease was granted reports ErrInvalidOption for it.
// Two requests in parallel: one keep-alive stream for the batch, and a read
// of the keys.
func (b *Backend) Extend(ctx context.Context, leases []ctxlock.Lease, ttl time.Duration) []error {
	errs := make([]error, len(leases))
	if len(leases) == 0 {
		return errs
	}
	if ttl <= 0 {
		for i := range errs {
			errs[i] = fmt.Errorf("etcd: %w: extend TTL %v", ctxlock.ErrInvalidOption, ttl)
		}
		return errs
	}
	if err := b.closedErr(); err != nil {
		fill(errs, err)
		return errs
	}
	b.redial()
	// One attempt gets a quarter of the TTL, so that a refresh stuck on a
	// member that stopped answering (frozen, cut off: its connection still
	// looks up) gives up while the Manager can still retry it, and the
	// retry goes on a new stream, to another member, before the hold's
	// validity runs out. Within the attempt, a request not answered soon is
	// sent again (hedged), which the client's round-robin balancer sends
	// to the next member: with one member of three frozen, a retry alone
	// lands on it again too often (the keep-alive and the read each pick a
	// member), and a hold of a short TTL would end after two or three
	// unlucky attempts.
	ctx, cancel := context.WithTimeout(ctx, max(ttl/4, minAttemptTimeout))
	defer cancel()
	hedgeDelay := b.hedgeDelay(ttl)
	want := ttlSeconds(ttl)
	kept := make([]error, len(leases))
	owned := make([]error, len(leases))
	var wg sync.WaitGroup
	wg.Go(func() {
		hedged(ctx, hedgeDelay, extendCopies, kept, func(ctx context.Context, errs []error, hedge bool, sent func()) {
			if hedge {
				b.hedges.Add(1)
			}
			b.keepAlive(ctx, leases, want, errs, hedge, sent)
		})
	})
	hedged(ctx, hedgeDelay, extendCopies, owned, func(ctx context.Context, errs []error, hedge bool, sent func()) {
		if hedge {
			b.hedges.Add(1)
		}
		sent()
		start := time.Now()
		b.checkOwned(ctx, leases, errs)
		if !hedge && ctx.Err() == nil && answered(errs) {
			b.observeReadRTT(time.Since(start))
		}
	})
	wg.Wait()
	for i := range leases {
		// A lost lease is lost whatever the other request says; otherwise
		// either error is the answer.
		switch {
		case errors.Is(owned[i], ctxlock.ErrLost) || errors.Is(kept[i], ctxlock.ErrLost):
			errs[i] = firstLost(owned[i], kept[i])
		case owned[i] != nil:
			errs[i] = owned[i]
		default:
			errs[i] = kept[i]
		}
	}
	return errs
}

func firstLost(a, b error) error {
	if errors.Is(a, ctxlock.ErrLost) {
		return a
	}
	return b
}

// hedged runs call into a copy of errs, and runs it again (a hedge) when
// delay has passed since the latest copy's request left (it calls sent)
// with some result still unknown, or at once when a copy ends leaving some
// unknown, up to copies runs in all. A result is known once a copy gives
// one that is not transient (ctxlock.ErrUnavailable); each of errs gets the
// first known result for its index, from whichever copy, or else the last
// transient one. Once every result is known the copies still running are
// cancelled; hedged returns when every copy has returned. call's hedge is
// false for the first copy only.
//
// The delay counts from sent, not from the start of the copy: opening a
// keep-alive stream can take long (with etcd authentication, clientv3
// authenticates for each stream: a bcrypt check and a Raft proposal), and
// hedges piling up while it opens would only slow it further.
func hedged(ctx context.Context, delay time.Duration, copies int, errs []error, call func(ctx context.Context, errs []error, hedge bool, sent func())) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan []error, copies)
	left := make(chan int, copies) // a copy's request left
	started, running := 0, 0
	start := func() {
		n, out := started, make([]error, len(errs))
		started++
		running++
		var once sync.Once
		go func() {
			call(ctx, out, n > 0, func() { once.Do(func() { left <- n }) })
			done <- out
		}()
	}
	known := make([]bool, len(errs))
	unknown := len(errs)
	timer := time.NewTimer(delay)
	timer.Stop()
	defer timer.Stop()
	start()
	for running > 0 && unknown > 0 {
		select {
		case out := <-done:
			running--
			for i, err := range out {
				if known[i] {
					continue
				}
				errs[i] = err
				if !errors.Is(err, ctxlock.ErrUnavailable) {
					known[i] = true
					unknown--
				}
			}
			if unknown > 0 && started < copies && ctx.Err() == nil {
				timer.Stop()
				start()
			}
		case n := <-left:
			if n == started-1 && started < copies {
				timer.Reset(delay)
			}
		case <-timer.C:
			if started < copies && ctx.Err() == nil {
				start()
			}
		}
	}
	cancel()
	for ; running > 0; running-- {
		<-done
	}
}

// keepAliveStream is one of the Backend's LeaseKeepAlive streams. Streams
// are opened on first use and kept: opening one costs a round trip, and
// with etcd authentication an Authenticate call (clientv3 authenticates
// again for every stream it opens: a bcrypt check and a Raft proposal on
// the server). A stream is used by one Extend at a time, and dropped when a
// call on it fails or is cut off by its context (its answers could no
// longer be matched).
type keepAliveStream struct {
	stream pb.Lease_LeaseKeepAliveClient // nil until opened, or after a failure
	cancel context.CancelFunc
}

// keepAlive renews the leases: one keep-alive per lease, on as many
// streams as the batch has chunks of keepAliveChunk (a member that is not
// the leader forwards a stream's renewals to the leader one after another,
// so large batches go on parallel streams). The first send of a batch uses
// the Backend's streams; a hedge opens streams of its own, closed after
// the call: the Backend's may be the ones stuck on the member it is to
// avoid.
//
// Each chunk calls sent once its stream is open and its keep-alives are
// on their way.
func (b *Backend) keepAlive(ctx context.Context, leases []ctxlock.Lease, want int64, errs []error, hedge bool, sent func()) {
	chunk := max(keepAliveChunk, (len(leases)+keepAliveStreams-1)/keepAliveStreams)
	var wg sync.WaitGroup
	for start := 0; start < len(leases); start += chunk {
		end := min(start+chunk, len(leases))
		if hedge {
			wg.Go(func() { b.keepAliveOnce(ctx, leases[start:end], want, errs[start:end], sent) })
		} else {
			wg.Go(func() { b.keepAliveOn(ctx, leases[start:end], want, errs[start:end], sent) })
		}
	}
	wg.Wait()
}

// keepAliveOnce renews the leases on a stream of its own.
func (b *Backend) keepAliveOnce(ctx context.Context, leases []ctxlock.Lease, want int64, errs []error, sent func()) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := b.leases.LeaseKeepAlive(sctx)
	if err != nil {
		fill(errs, classify("keep-alive", err))
		return
	}
	renew(ctx, stream, cancel, leases, want, errs, sent)
}

// keepAliveOn renews the leases on one of the Backend's streams, waiting
// for a free one.
func (b *Backend) keepAliveOn(ctx context.Context, leases []ctxlock.Lease, want int64, errs []error, sent func()) {
	select {
	case <-b.keepAliveSlots:
	case <-ctx.Done():
		fill(errs, classify("keep-alive", ctx.Err()))
		return
	}
	b.keepAliveMu.Lock()
	s := b.keepAliveFree[len(b.keepAliveFree)-1]
	b.keepAliveFree = b.keepAliveFree[:len(b.keepAliveFree)-1]
	b.keepAliveMu.Unlock()
	defer func() {
		b.keepAliveMu.Lock()
		b.keepAliveFree = append(b.keepAliveFree, s)
		b.keepAliveMu.Unlock()
		b.keepAliveSlots <- struct{}{}
	}()
	if err := ctx.Err(); err != nil {
		fill(errs, classify("keep-alive", err))
		return
	}
	if s.stream == nil {
		sctx, cancel := context.WithCancel(b.ctx) // the stream outlives the call
		stream, err := b.leases.LeaseKeepAlive(sctx)
		if err != nil {
			cancel()
			fill(errs, classify("keep-alive", err))
			return
		}
		s.stream, s.cancel = stream, cancel
	}
	stop := context.AfterFunc(ctx, s.cancel) // a call cut off takes its stream down
	broken := renew(ctx, s.stream, s.cancel, leases, want, errs, sent)
	if !stop() || broken {
		s.cancel()
		s.stream, s.cancel = nil, nil
	}
}

// renew sends a keep-alive for each lease on stream and reads the answers
// into errs. It reports whether the stream is broken (failed, ended, or
// answered what was not asked): its answers could no longer be matched.
// cancel takes the stream down; sent is called as the keep-alives go.
func renew(ctx context.Context, stream pb.Lease_LeaseKeepAliveClient, cancel context.CancelFunc, leases []ctxlock.Lease, want int64, errs []error, sent func()) (broken bool) {
	sent()
	sendErr := make(chan error, 1)
	go func() {
		for _, l := range leases {
			if err := stream.Send(&pb.LeaseKeepAliveRequest{ID: leaseID(l.Owner)}); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	byID := make(map[int64][]int, len(leases))
	for i, l := range leases {
		id := leaseID(l.Owner)
		byID[id] = append(byID[id], i)
	}
	answered := make([]bool, len(leases))
	for n := 0; n < len(leases); n++ {
		resp, err := stream.Recv()
		if err != nil {
			broken = true
			if err == io.EOF {
				err = garbage("keep-alive: stream ended before every lease was answered")
			} else if ctx.Err() != nil {
				err = classify("keep-alive", ctx.Err())
			} else {
				err = classify("keep-alive", err)
			}
			for i := range errs {
				if !answered[i] {
					errs[i] = err
				}
			}
			break
		}
		idx := byID[resp.ID]
		if len(idx) == 0 {
			broken = true
			fill(errs, garbage(fmt.Sprintf("keep-alive: answer for lease %x, which was not asked", resp.ID)))
			break
		}
		i := idx[0]
		byID[resp.ID] = idx[1:]
		answered[i] = true
		switch {
		case resp.TTL <= 0:
			errs[i] = fmt.Errorf("etcd: %w: lease of %q lapsed", ctxlock.ErrLost, leases[i].Key)
		case resp.TTL < want:
			errs[i] = fmt.Errorf("etcd: %w: extend to %ds: the lease of %q was granted for %ds, and etcd renews a lease only for the TTL it was granted with",
				ctxlock.ErrInvalidOption, want, leases[i].Key, resp.TTL)
		}
	}
	if broken {
		cancel() // unblocks a Send waiting on flow control
	}
	if err := <-sendErr; err != nil && !broken {
		// Every lease was answered, yet a send failed: impossible, but the
		// stream is not to be trusted any more.
		broken = true
	}
	return broken
}

// hedgeDelay is how long an Extend of leases of ttl waits for an answer
// before it hedges: a twelfth of the TTL, or twice the smoothed round trip
// of its reads when that is longer, so that a cluster far away (or a large
// batch's read) is not hedged on every refresh, which doubles its load and,
// with authentication, makes each hedge's new stream authenticate; at most
// an eighth of the TTL, so that a hedge can still be answered within the
// attempt's quarter (a third send, 2 delays in, could not be once the round
// trip exceeds a twelfth: the delay only grows past a twelfth then); at
// least minHedgeDelay.
func (b *Backend) hedgeDelay(ttl time.Duration) time.Duration {
	d := max(ttl/12, 2*time.Duration(b.readRTT.Load()))
	return max(min(d, ttl/8), minHedgeDelay)
}

// observeReadRTT folds the round trip d of a read that was answered into
// readRTT (an exponentially weighted moving average, weight 1/8, as TCP's
// smoothed RTT). Reads that time out, such as those sent to a frozen
// member, or that a hedge's answer cut off, do not count: hedging exists
// for them. A read that a stall delayed but that was answered in time
// does; the cap on the delay (hedgeDelay) and the later reads bound its
// effect.
func (b *Backend) observeReadRTT(d time.Duration) {
	for {
		old := b.readRTT.Load()
		n := int64(d)
		if old != 0 {
			n = old + (int64(d)-old)/8
		}
		if b.readRTT.CompareAndSwap(old, n) {
			return
		}
	}
}

// answered reports whether every result of errs is the server's answer:
// the key is held, or it is lost. Not an error of the connection, nor a
// send cut off because a hedge was answered first (context.Canceled).
func answered(errs []error) bool {
	for _, err := range errs {
		if err != nil && !errors.Is(err, ctxlock.ErrLost) {
			return false
		}
	}
	return true
}

// checkOwned reads the keys of the leases and reports ErrLost for every key
// not held by its lease's owner (with its lease).
func (b *Backend) checkOwned(ctx context.Context, leases []ctxlock.Lease, errs []error) {
	var wg sync.WaitGroup
	for start := 0; start < len(leases); start += maxTxnOps {
		chunk := leases[start:min(start+maxTxnOps, len(leases))]
		wg.Go(func() { b.checkOwnedChunk(ctx, chunk, errs[start:start+len(chunk)]) })
	}
	wg.Wait()
}

// checkOwnedChunk is checkOwned for at most maxTxnOps leases: one
// transaction.
func (b *Backend) checkOwnedChunk(ctx context.Context, leases []ctxlock.Lease, errs []error) {
	ops := make([]clientv3.Op, len(leases))
	for i, l := range leases {
		ops[i] = clientv3.OpGet(b.LockKey(l.Key))
	}
	resp, err := b.client.Txn(ctx).Then(ops...).Commit()
	if err == nil && len(resp.Responses) != len(leases) {
		err = garbage(fmt.Sprintf("read %d keys: %d answers", len(leases), len(resp.Responses)))
	}
	for i, l := range leases {
		switch {
		case err != nil:
			errs[i] = classify("read", err)
		default:
			r := resp.Responses[i].GetResponseRange()
			if r == nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != l.Owner || r.Kvs[0].Lease != leaseID(l.Owner) {
				errs[i] = fmt.Errorf("etcd: %w: %q is no longer held by this owner", ctxlock.ErrLost, l.Key)
			}
		}
	}
}

// Release revokes the lease of every hold, which deletes its key (and
// metadata) if the hold still has it, and wakes the key's watchers. A
// lease that is gone (lapsed, or released before) is released either way.
func (b *Backend) Release(ctx context.Context, leases []ctxlock.Lease) []error {
	errs := make([]error, len(leases))
	if len(leases) == 0 {
		return errs
	}
	if err := b.closedErr(); err != nil {
		fill(errs, err)
		return errs
	}
	b.redial()
	// A revoke stuck on a member that stopped answering gives up after
	// releaseAttemptTimeout: the Manager retries it, through another member.
	ctx, cancel := context.WithTimeout(ctx, releaseAttemptTimeout)
	defer cancel()
	var g errgroup.Group
	g.SetLimit(maxConcurrentRevokes)
	for i, l := range leases {
		g.Go(func() error {
			_, err := b.leases.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: leaseID(l.Owner)})
			if err != nil && !errors.Is(rpctypes.Error(err), rpctypes.ErrLeaseNotFound) {
				errs[i] = classify("release", err)
			}
			return nil
		})
	}
	_ = g.Wait()
	return errs
}

// Watch returns a channel that receives a value when key is deleted: a
// release or a lapse (etcd deletes the key of an expired lease). One watch
// on the Backend's key prefix serves every key.
func (b *Backend) Watch(key string) (<-chan struct{}, func()) {
	w := &watcher{ch: make(chan struct{}, 1)}
	k := b.LockKey(key)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, func() {}
	}
	set := b.watchers[k]
	if set == nil {
		set = make(map[*watcher]struct{})
		b.watchers[k] = set
	}
	set[w] = struct{}{}
	b.startWatchLocked()
	b.mu.Unlock()
	var once sync.Once
	return w.ch, func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if set := b.watchers[k]; set != nil {
				delete(set, w)
				if len(set) == 0 {
					delete(b.watchers, k)
				}
			}
		})
	}
}

// startWatchLocked starts the watch loop unless it runs.
func (b *Backend) startWatchLocked() {
	if !b.watching {
		b.watching = true
		b.watchErr = errors.New("etcd: watch starting")
		b.watchDone = make(chan struct{})
		go b.watchLoop()
	}
}

// NotifyDeletes implements ctxlock.DeleteNotifier: the Backend's watch
// sees every deletion of a key under its prefix (a release, a lapse, a
// revocation, an operator's delete) and calls f with the key and the
// deletion's revision, from the watch's goroutine, until stop is called.
// A lease's token is the revision that created its key, so the lease
// whose key was deleted has a smaller one, and any later lease a larger
// one. A watch that reconnects resumes after the last deletion it
// delivered (or the revision it began at), so none is missed unless etcd
// compacted it away; after a compaction it resumes at the compaction's
// revision. It starts the watch if none runs.
func (b *Backend) NotifyDeletes(f func(key string, before uint64)) (stop func()) {
	p := &f
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || f == nil {
		return func() {}
	}
	if b.onDelete == nil {
		b.onDelete = make(map[*func(string, uint64)]struct{})
	}
	b.onDelete[p] = struct{}{}
	b.startWatchLocked()
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		delete(b.onDelete, p)
	}
}

// watchLoop watches deletions under the lock prefix until Close, and
// reconnects (resuming from the last revision seen, so that no deletion is
// missed unless etcd compacted it away) with backoff.
func (b *Backend) watchLoop() {
	defer close(b.watchDone)
	var rev int64 // the revision to resume from; 0: now
	delay := watchRetryMin
	for b.ctx.Err() == nil {
		ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(b.ctx))
		opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithFilterPut(), clientv3.WithCreatedNotify()}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		var lastErr error
		for resp := range b.client.Watch(ctx, b.lockPrefix, opts...) {
			if resp.Created {
				if rev == 0 && resp.Header.Revision > 0 {
					// Watching from now: a reconnect resumes after the
					// revision the watch began at, not at a later now.
					rev = resp.Header.Revision + 1
				}
				b.setWatchErr(nil)
				delay = watchRetryMin
				// A deletion may have gone unseen while the watch was down.
				b.wakeAll()
				continue
			}
			if resp.CompactRevision != 0 {
				// The deletions up to the compaction are gone (wakeAll at
				// the next Created covers the watchers); those after it
				// are not: resume there, not at now.
				rev = resp.CompactRevision
				lastErr = fmt.Errorf("etcd: watch: revision %d compacted", resp.CompactRevision)
				break
			}
			if err := resp.Err(); err != nil {
				lastErr = err
				break
			}
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypeDelete && ev.Kv != nil {
					b.wake(string(ev.Kv.Key), ev.Kv.ModRevision)
				}
			}
			rev = resumeRevision(rev, resp.Events)
		}
		cancel()
		if b.ctx.Err() != nil {
			return
		}
		if lastErr == nil {
			lastErr = errors.New("etcd: watch ended")
		}
		b.setWatchErr(fmt.Errorf("etcd: watch reconnecting: %w", lastErr))
		t := time.NewTimer(delay)
		select {
		case <-b.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(2*delay, watchRetryMax)
	}
}

// resumeRevision is where a watch that has seen events resumes: after the
// last event it delivered. Not after the response header's revision: a
// watcher catching up on a backlog gets events in batches whose header
// carries the store's current revision, ahead of the events still to come.
func resumeRevision(rev int64, events []*clientv3.Event) int64 {
	for _, ev := range events {
		if ev.Kv != nil && ev.Kv.ModRevision >= rev {
			rev = ev.Kv.ModRevision + 1
		}
	}
	return rev
}

func (b *Backend) setWatchErr(err error) {
	b.mu.Lock()
	b.watchErr = err
	b.mu.Unlock()
}

// wake notifies the watchers of etcd key k, and reports its deletion at
// revision rev to NotifyDeletes' functions (outside the mutex: they take
// the Manager's).
func (b *Backend) wake(k string, rev int64) {
	b.mu.Lock()
	for w := range b.watchers[k] {
		notify(w.ch)
	}
	var fs []func(string, uint64)
	for f := range b.onDelete {
		fs = append(fs, *f)
	}
	b.mu.Unlock()
	before := uint64(math.MaxUint64) // no revision: any lease of the key may have ended
	if rev > 0 {
		before = uint64(rev)
	}
	if key, ok := strings.CutPrefix(k, b.lockPrefix); ok {
		for _, f := range fs {
			f(key, before)
		}
	}
}

func (b *Backend) wakeAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, set := range b.watchers {
		for w := range set {
			notify(w.ch)
		}
	}
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Health asks every endpoint of the client for its status, each within 2s
// (and ctx). It reports endpoints that do not answer, a cluster without a
// leader, alarms (such as NOSPACE) and a watch that is reconnecting; err is
// non-nil (matching ctxlock.ErrUnavailable) when no endpoint answers with a
// leader, or when the Backend is closed.
func (b *Backend) Health(ctx context.Context) ([]string, error) {
	b.mu.Lock()
	closed, watching, watchErr := b.closed, b.watching, b.watchErr
	b.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	b.redial()
	eps := b.client.Endpoints()
	conds := make([]string, len(eps))
	ok := make([]bool, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, endpointStatusTimeout)
			defer cancel()
			st, err := b.client.Status(ctx, ep)
			switch {
			case err != nil:
				conds[i] = fmt.Sprintf("etcd endpoint %s: %v", ep, err)
			case st.Leader == 0:
				conds[i] = fmt.Sprintf("etcd endpoint %s: no leader", ep)
			case len(st.Errors) > 0:
				ok[i] = true
				conds[i] = fmt.Sprintf("etcd endpoint %s: %v", ep, st.Errors)
			default:
				ok[i] = true
			}
		})
	}
	wg.Wait()
	var out []string
	anyOK := false
	for i := range eps {
		anyOK = anyOK || ok[i]
		if conds[i] != "" {
			out = append(out, conds[i])
		}
	}
	if watching && watchErr != nil {
		out = append(out, watchErr.Error())
	}
	if !anyOK {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		return out, fmt.Errorf("etcd: %w: no endpoint of %v answers with a leader", ctxlock.ErrUnavailable, eps)
	}
	return out, nil
}

// Close stops the Backend's watch and makes every later call fail with
// ErrClosed. It does not close the client. It is idempotent.
func (b *Backend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.onDelete = nil
	done := b.watchDone
	for _, set := range b.watchers {
		for w := range set {
			notify(w.ch)
		}
	}
	b.mu.Unlock()
	b.cancel()
	if done != nil {
		<-done
	}
	return nil
}

func fill(errs []error, err error) {
	for i := range errs {
		if errs[i] == nil {
			errs[i] = err
		}
	}
}

// garbage is the error of an answer that breaks etcd's protocol: transient,
// as a fault of the server or the connection would be.
func garbage(what string) error {
	return ctxlock.Unavailable(fmt.Errorf("etcd: unexpected answer: %s", what))
}

// classify marks the errors the Manager should retry: timeouts, a server
// without a leader, an unreachable cluster, exhausted resources (NOSPACE,
// too many requests), and any answer whose outcome is unknown. Bad requests
// (a key too large), missing permissions and a closed client are permanent.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	err = rpctypes.Error(err)
	wrapped := fmt.Errorf("etcd: %s: %w", op, err)
	if errors.Is(err, context.DeadlineExceeded) {
		return ctxlock.Unavailable(wrapped)
	}
	if errors.Is(err, context.Canceled) {
		return wrapped // the caller's: the Manager looks at its context
	}
	if errors.Is(err, clientv3.ErrNoAvailableEndpoints) {
		return ctxlock.Unavailable(wrapped)
	}
	if errors.Is(err, rpctypes.ErrInvalidAuthToken) || errors.Is(err, rpctypes.ErrAuthOldRevision) {
		// A token that expired, or predates a change of users or roles:
		// the client authenticates again (for a keep-alive stream, when
		// the next call reopens it), so a retry goes through.
		return ctxlock.Unavailable(wrapped)
	}
	code := status.Code(err)
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	}
	switch code {
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated,
		codes.FailedPrecondition, codes.OutOfRange, codes.Unimplemented, codes.AlreadyExists:
		return wrapped
	case codes.Canceled:
		if isClientClosing(err) {
			return wrapped
		}
		return ctxlock.Unavailable(wrapped)
	default:
		// Unavailable, DeadlineExceeded, ResourceExhausted, Aborted,
		// Internal, Unknown, NotFound (a lease that lapsed between the
		// grant and the put): the request may or may not have been applied.
		return ctxlock.Unavailable(wrapped)
	}
}

func isClientClosing(err error) bool {
	s, ok := status.FromError(err)
	return ok && s.Message() == "grpc: the client connection is closing"
}
