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

// gateDial holds the next dial, once armed, until let is closed.
type gateDial struct {
	mu      sync.Mutex
	armed   bool
	reached chan struct{}
	let     chan struct{}
}

func (g *gateDial) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		g.mu.Lock()
		hold := g.armed
		g.armed = false
		g.mu.Unlock()
		if hold {
			close(g.reached)
			<-g.let
		}
		return next(ctx, network, addr)
	}
}
func (g *gateDial) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (g *gateDial) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A SUBSCRIBE fails on a reset connection (go-redis reconnects inside it,
// without the call's channel) and the channel's only watcher stops before
// the failure is handled. The hub sends again only the channels that still
// have watchers: this one stays "sent" though the server never subscribed
// it, and a watcher that comes back while it lingers is never subscribed:
// it hears no release.
func TestFailedSubscribeOfChannelLeftIdleIsNotLost(t *testing.T) {
	s := redistest.StartServer(t)
	ctx := context.Background()
	p := faultproxy.Start(t, s.Addr())
	hold := &probeHold{reached: make(chan struct{}), let: make(chan struct{}), dials: make(chan struct{}, 16)}
	gate := &gateDial{reached: make(chan struct{}), let: make(chan struct{})}
	c := s.Client(t, func(o *redis.Options) { o.Addr = p.Addr() })
	c.AddHook(hold)
	c.AddHook(gate)
	b := newBackend(t, c, goredis.WithHealthCheckInterval(100*time.Millisecond), goredis.WithSubscribeWait(50*time.Millisecond))
	holder := newBackend(t, s.Client(t))

	q := acquire(t, holder, "q", 10*time.Second)
	defer holder.Release(ctx, []ctxlock.Lease{q})
	mustRefuse(t, b, "w1")
	turns, stopW := b.WatchWaiter("q", "w1")
	defer stopW()
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
	gate.mu.Lock()
	gate.armed = true
	gate.mu.Unlock()
	_, stop := b.Watch("y")
	select {
	case <-gate.reached: // the SUBSCRIBE failed; go-redis reconnects
	case <-time.After(waitLong):
		t.Fatal("no reconnect after the failed SUBSCRIBE")
	}
	stop() // y loses its watcher while its SUBSCRIBE is failing
	close(gate.let)
	close(hold.let)
	select {
	case <-turns: // the subscription is back
	case <-time.After(waitLong):
		t.Fatal("the waiter was not woken when the subscription came back")
	}

	ch, stop2 := b.Watch("y") // while y lingers
	defer stop2()
	drain(ch)
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
