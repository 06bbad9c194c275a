package goredis

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock/internal/redistest"
)

// probeHook reports each inbox probe the hub publishes through the client,
// with its result.
type probeHook struct{ probes chan error }

func (h probeHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h probeHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h probeHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if args := cmd.Args(); cmd.Name() == "publish" && len(args) == 3 && args[2] == inboxProbe {
			select {
			case h.probes <- err:
			default: // the test has stopped listening
			}
		}
		return err
	}
}

// In Cluster mode a probe published through the ClusterClient (a PUBLISH
// without a key) went to the masters in turn. While one of them, not the
// one the subscription was on, did not answer, a probe sent to it failed
// and the hub took that for a dead subscription: it dropped and rebuilt a
// subscription that was fine (a window in which releases are lost, a
// wake-up of every watcher, and Health reporting the subscription down),
// again and again. The hub of a key's master now probes through that
// master's own client; a frozen other master does not disturb it.
func TestClusterProbeToAnotherMasterKeepsSubscription(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	c := cl.Client(t)
	b := New(c, WithHealthCheckInterval(100*time.Millisecond))
	t.Cleanup(func() { _ = b.Close() })
	_, stop := b.WatchWaiter("k", "w")
	defer stop()
	ctx := context.Background()
	node, err := c.MasterForKey(ctx, b.lockKey("k"))
	if err != nil {
		t.Fatal(err)
	}
	b.hubsMu.Lock()
	h := b.hubs[node]
	b.hubsMu.Unlock()
	if h == nil {
		t.Fatal("no hub for the key's master")
	}
	hook := probeHook{probes: make(chan error, 64)}
	node.AddHook(hook)

	timeout := time.After(30 * time.Second)
	next := func() error {
		select {
		case err := <-hook.probes:
			return err
		case <-timeout:
			t.Fatal("no probe in 30s")
			return nil
		}
	}
	for next() != nil { // the subscription is up, and the probes heard
	}
	var subNode *redistest.Server
	for _, n := range cl.Nodes() {
		m, err := n.Client(t).PubSubNumSub(ctx, b.Inbox()).Result()
		if err != nil {
			t.Fatal(err)
		}
		if m[b.Inbox()] > 0 {
			subNode = n
		}
	}
	if subNode == nil || subNode.Addr() != node.Options().Addr {
		t.Fatalf("the inbox's subscription is on %v, not on the key's master %s", subNode, node.Options().Addr)
	}
	victim := cl.Node(0)
	if victim == subNode {
		victim = cl.Node(1)
	}
	h.mu.Lock()
	ps := h.ps
	h.mu.Unlock()
	victim.Stop()
	t.Cleanup(victim.Cont)

	for range 5 { // probes, while the other master is frozen
		if err := next(); err != nil {
			t.Fatalf("probe through the subscription's master (%s) failed: %v", subNode.Addr(), err)
		}
	}
	h.mu.Lock()
	replaced, state := h.ps != ps, h.state
	h.mu.Unlock()
	if replaced || state == subDown {
		t.Fatalf("a frozen master (%s), not the subscription's (%s), had the hub drop its subscription (replaced %v, down %v)",
			victim.Addr(), subNode.Addr(), replaced, state == subDown)
	}
}
