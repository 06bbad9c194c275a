package goredis_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// Backend.Close returns promptly while the server is frozen. The hub's
// reconnect (dial and HELLO inside go-redis's PubSub, holding the PubSub's
// mutex, which Close needs) waited on context.Background: Close took the
// client's ReadTimeout (about 5s here), and for ever with ReadTimeout -1
// (go-redis: "no timeout"), even with ContextTimeoutEnabled.
func TestCloseWhileServerFrozen(t *testing.T) {
	for _, rt := range []time.Duration{0, -1} {
		t.Run(rt.String(), func(t *testing.T) { closeWhileFrozen(t, rt) })
	}
}

func closeWhileFrozen(t *testing.T, readTimeout time.Duration) {
	s := redistest.StartServer(t)
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), ReadTimeout: readTimeout, ContextTimeoutEnabled: true})
	defer c.Close()
	b := goredis.New(c, goredis.WithHealthCheckInterval(50*time.Millisecond))
	_, stop := b.Watch("k")
	defer stop()
	s.Stop()
	defer s.Cont()
	// Wait until the health check has given the subscription up.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		conds, _ := b.Health(ctx)
		cancel()
		if len(conds) > 1 { // unreachable + subscription down
			break
		}
	}
	// Not synchronisation: a pause long enough for the reconnect loop (its
	// backoff starts at 20ms) to be inside a reconnect, the window where
	// Close used to block. Close must be prompt whatever the hub is doing.
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	closed := make(chan struct{})
	go func() { _ = b.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Errorf("Close still blocked after 10s with the server frozen")
		s.Cont() // let it end, so that no goroutine outlives the test
		<-closed
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v with the server frozen; want it to return at once", d)
	}
}
