package goredis_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/internal/faultproxy"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// The inbox probe fails (in Cluster mode it may go to another master), so
// the reader pings on the subscription's connection, which was reset
// meanwhile. The PING fails and go-redis reconnects inside it, subscribing
// its channels again; the reader then reads on the new connection as if
// nothing had happened. A grant published while the connection was down
// was lost: its waiter must be told to look again once the subscription is
// back, or it sleeps until its retry while the key sits granted to it.
func TestFailedPingReconnectHintsWaiters(t *testing.T) {
	s := redistest.StartServer(t)
	ctx := context.Background()
	p := faultproxy.Start(t, s.Addr())
	hold := &probeHold{reached: make(chan struct{}), let: make(chan struct{}), dials: make(chan struct{}, 16),
		fail: errors.New("probe failed")}
	c := s.Client(t, func(o *redis.Options) { o.Addr = p.Addr() })
	c.AddHook(hold)
	b := newBackend(t, c, goredis.WithHealthCheckInterval(100*time.Millisecond))
	holder := newBackend(t, s.Client(t))

	q := acquire(t, holder, "q", 10*time.Second)
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
	// Granted to w1 while its process has no subscription: lost to it.
	if errs := holder.Release(ctx, []ctxlock.Lease{q}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	drain(hold.dials)
	close(hold.let) // the probe fails: the reader pings
	select {
	case <-hold.dials: // the PING failed and go-redis reconnected
	case <-time.After(waitLong):
		t.Fatal("no reconnect after the failed PING")
	}
	select {
	case <-turns:
	case <-time.After(3 * time.Second):
		t.Fatal("w1 heard nothing after its process's subscription was re-established inside a failed PING: the grant published while it was down is lost to it")
	}
}
