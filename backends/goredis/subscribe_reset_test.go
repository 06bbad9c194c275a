package goredis_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/internal/faultproxy"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// probeHold holds the hub's inbox probe (a PUBLISH of "probe") once armed,
// and reports every dial. With fail set, the held probe then fails with it
// instead of going out.
type probeHold struct {
	mu      sync.Mutex
	armed   bool
	reached chan struct{}
	let     chan struct{}
	dials   chan struct{}
	fail    error
}

func (h *probeHold) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		select {
		case h.dials <- struct{}{}:
		default:
		}
		return c, err
	}
}

func (h *probeHold) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		h.mu.Lock()
		hold := h.armed && cmd.Name() == "publish" && len(args) == 3 && args[2] == "probe"
		if hold {
			h.armed = false
		}
		h.mu.Unlock()
		if hold {
			close(h.reached)
			<-h.let
			if h.fail != nil {
				return h.fail
			}
		}
		return next(ctx, cmd)
	}
}

func (h *probeHold) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// The subscription's connection is reset while the hub's reader is busy
// elsewhere (here: publishing its inbox probe), and a new channel is
// subscribed just then. The SUBSCRIBE fails on the dead connection, and
// go-redis reconnects inside that call, resubscribing the channels it knew,
// before it adds the new one to its set: the new channel is in go-redis's
// set but not subscribed on the new connection, and the hub, which ignored
// the error, believes it sent. Its watchers never hear a release (and a new
// inbox subscription would lose every hand-off) until some later reconnect.
// Nor did the hub notice the reconnect: a grant published while the
// connection was down was lost, and its waiter was not told to look again.
// grantLostDuringProbe sets up the loss the tests above start from: a
// waiter w1 of b (through a fault proxy, with hold as its hook) queued for
// q, b's reader held in its inbox probe, the subscription's connection
// reset, and q granted to w1 by holder while b has no subscription. The
// held probe fails with fail once let, if fail is not nil. s is the server.
func grantLostDuringProbe(t *testing.T, fail error) (s *redistest.Server, b, holder *goredis.Backend, hold *probeHold, turns <-chan ctxlock.Handoff) {
	t.Helper()
	s = redistest.StartServer(t)
	p := faultproxy.Start(t, s.Addr())
	hold = &probeHold{reached: make(chan struct{}), let: make(chan struct{}), dials: make(chan struct{}, 16), fail: fail}
	c := s.Client(t, func(o *redis.Options) { o.Addr = p.Addr() })
	c.AddHook(hold)
	b = newBackend(t, c, goredis.WithHealthCheckInterval(100*time.Millisecond))
	holder = newBackend(t, s.Client(t))

	// A waiter is queued for q and listens on the inbox (so the reader
	// probes by publishing).
	q := acquire(t, holder, "q", 10*time.Second)
	mustRefuse(t, b, "w1")
	turns, stopW := b.WatchWaiter("q", "w1")
	t.Cleanup(stopW)
	drain(turns)
	hold.mu.Lock()
	hold.armed = true
	hold.mu.Unlock()
	select {
	case <-hold.reached: // the reader is publishing its probe, not reading
	case <-time.After(waitLong):
		t.Fatal("no inbox probe")
	}
	p.Reset()
	p.Pass()
	// Granted to w1 while its process has no subscription: lost to it.
	if errs := holder.Release(context.Background(), []ctxlock.Lease{q}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	return s, b, holder, hold, turns
}

func TestSubscribeFailingOnResetConnectionIsRetried(t *testing.T) {
	ctx := context.Background()
	s, b, holder, hold, turns := grantLostDuringProbe(t, nil)
	drain(hold.dials)
	ch, stop := b.Watch("y")
	defer stop()
	select {
	case <-hold.dials: // the SUBSCRIBE failed and go-redis reconnected
	case <-time.After(waitLong):
		t.Fatal("no reconnect after the failed SUBSCRIBE")
	}
	close(hold.let)
	drain(ch)

	// The subscription was re-established: the waiter must be told to look
	// again, since what was published meanwhile was lost.
	select {
	case <-turns:
	case <-time.After(3 * time.Second):
		t.Error("w1 heard nothing after its process's subscription was re-established: the grant published while it was down is lost to it")
	}

	lease := acquire(t, holder, "y", 10*time.Second)
	if errs := holder.Release(ctx, []ctxlock.Lease{lease}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	select {
	case <-ch:
	case <-time.After(3 * time.Second):
		lk, _, _ := b.Keys("y")
		n, err := s.Client(t).PubSubNumSub(ctx, lk+":released").Result()
		t.Fatalf("the watcher of y heard no release within 3s (subscribers of its channel: %v, %v)", n, err)
	}
}
