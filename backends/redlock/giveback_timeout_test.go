package redlock_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/redlock"
	"github.com/ctxlock/ctxlock/internal/faultproxy"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// scriptLog is a go-redis hook that records the outcome of every script
// call (or pipeline of them) the client completes, but a NOSCRIPT (the
// caller sends the script itself next).
type scriptLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *scriptLog) add(cmds []redis.Cmder, err error) error {
	if name := cmds[0].Name(); (name == "eval" || name == "evalsha") && !redis.HasErrorPrefix(err, "NOSCRIPT") {
		l.mu.Lock()
		l.errs = append(l.errs, err)
		l.mu.Unlock()
	}
	return err
}

// since returns the outcomes recorded after the first n.
func (l *scriptLog) since(n int) []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.errs[n:]...)
}

func (l *scriptLog) DialHook(next redis.DialHook) redis.DialHook { return next }
func (l *scriptLog) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { return l.add([]redis.Cmder{cmd}, next(ctx, cmd)) }
}
func (l *scriptLog) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { return l.add(cmds, next(ctx, cmds)) }
}

// A failed attempt's give-back on a node whose answer came too late for the
// attempt runs in the background, so it gets a release's time
// (DefaultReleaseTimeout), not the attempt's per-node timeout: a node slow
// enough to miss the attempt would miss that bound too, and the give-back
// would fail and be sent again (seen under load: thousands of give-backs
// failing, each one a lease left behind until the retry).
func TestGiveBackOnSlowNodeGetsReleaseTimeout(t *testing.T) {
	c := startNodes(t, 3)
	p := faultproxy.Start(t, c.servers[2].Addr())
	viaProxy := redis.NewClient(redistest.ClientOptions(p.Addr()))
	t.Cleanup(func() { _ = viaProxy.Close() })
	calls := &scriptLog{}
	viaProxy.AddHook(calls)
	clients := []redis.UniversalClient{c.clients[0], c.clients[1], viaProxy}
	b := newBackend(t, clients)
	ctx := context.Background()
	key := uniqueKey("giveback")
	lk, _, _ := b.Keys(key)

	// A holds the key on nodes 0 and 1; node 2 is free.
	settled(t, clients, func(sb *redlock.Backend) {
		if _, err := sb.Acquire(ctx, ctxlock.AcquireRequest{Key: key, Owner: owner(), TTL: 10 * time.Second, Timeout: time.Second}); err != nil {
			t.Fatal(err)
		}
	})
	if err := c.clients[2].Del(ctx, lk).Err(); err != nil {
		t.Fatal(err)
	}

	// B's attempt: nodes 0 and 1 refuse, node 2 grants, but its answers
	// take 150ms, seven times the attempt's 20ms.
	p.Delay(0, 150*time.Millisecond)
	n := len(calls.since(0))
	_, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: key, Owner: owner(), TTL: 10 * time.Second, Timeout: 20 * time.Millisecond})
	if !errors.Is(err, ctxlock.ErrHeld) {
		t.Fatalf("B's attempt = %v; want ErrHeld", err)
	}
	var after []error
	waitFor(t, "node 2 to answer the acquire and the give-back (or its retry)", func() bool {
		after = calls.since(n)
		return len(after) >= 2
	})
	if !errors.Is(after[0], context.DeadlineExceeded) && !isTimeout(after[0]) {
		t.Fatalf("node 2's acquire = %v; want it to time out (the test's premise)", after[0])
	}
	if after[1] != nil {
		t.Fatalf("node 2's give-back = %v; want it to succeed at the first send", after[1])
	}
	if h := holders(t, c, b, key); h[2] != "" {
		t.Fatalf("node 2 still holds B's attempt (%q) after its give-back; calls %v", h[2], calls.since(n))
	}
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}
