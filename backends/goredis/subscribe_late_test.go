package goredis_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/internal/faultproxy"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// routeDials sends the client's next dial to addr once it is set; the
// others go straight to the server.
type routeDials struct{ addr atomic.Pointer[string] }

func (r *routeDials) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if a := r.addr.Swap(nil); a != nil {
			addr = *a
		}
		return next(ctx, network, addr)
	}
}
func (r *routeDials) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (r *routeDials) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// WatchWaiter waits for the server to confirm the inbox subscription only up
// to WithSubscribeWait. When the confirmation comes later, a grant published
// in between (after the caller looked once more, which the Manager does right
// after WatchWaiter returns) was heard by no one: the waiter must then get a
// hint once the subscription is confirmed, so that it looks again, rather
// than sleep until its retry timer while the key sits granted to it.
func TestWatchWaiterHintedWhenConfirmedLate(t *testing.T) {
	s := redistest.StartServer(t)
	ctx := context.Background()
	holder := newBackend(t, s.Client(t))

	// The waiter's process: commands go straight to the server, the
	// subscription through a proxy that can delay what it sends.
	p := faultproxy.Start(t, s.Addr())
	route := &routeDials{}
	wc := s.Client(t)
	wc.AddHook(route)
	b := newBackend(t, wc, goredis.WithSubscribeWait(50*time.Millisecond))
	if err := wc.Ping(ctx).Err(); err != nil { // a command connection, direct
		t.Fatal(err)
	}
	pa := p.Addr()
	route.addr.Store(&pa) // the subscription's connection

	// The subscription is up (another key's watch), the inbox not yet
	// subscribed.
	other, stopOther := b.Watch("other")
	defer stopOther()
	drain(other)
	if n := p.Stats().Accepted; n != 1 {
		t.Fatalf("%d connections through the proxy; want 1, the subscription's", n)
	}

	lease := acquire(t, holder, "q", 10*time.Second)
	mustRefuse(t, b, "w1")
	p.Delay(500*time.Millisecond, 0) // the SUBSCRIBE reaches the server late
	turns, stop := b.WatchWaiter("q", "w1")
	defer stop()
	// What the Manager does next: look once more, now that (it believes) it
	// will hear its turn.
	mustRefuse(t, b, "w1")
	if errs := holder.Release(ctx, []ctxlock.Lease{lease}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	lk, _, _ := b.Keys("q")
	if v, _ := s.Client(t).Get(ctx, lk).Result(); v != ctxlock.GrantOwner("w1", lease.Token+1) {
		t.Fatalf("key after the release: %q; want it granted to w1", v)
	}
	select {
	case <-turns:
	case <-time.After(3 * time.Second):
		if n, err := s.Client(t).PubSubNumSub(ctx, b.Inbox()).Result(); err != nil || n[b.Inbox()] != 1 {
			t.Fatalf("inbox subscribers after 3s: %v, %v; want 1", n, err)
		}
		t.Fatal("the waiter heard nothing once its subscription was confirmed: the grant published before that is lost to it until its next retry")
	}
}
