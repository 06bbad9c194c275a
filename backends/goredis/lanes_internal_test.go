package goredis

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock/internal/redistest"
)

// keepIdleLane has l, a lane of bt with no flusher, stop as a flusher
// whose last wait for callers was in vain (backoff) stops: through flush,
// with an empty queue.
func keepIdleLane(bt *batcher, addr string, backoff int) *lane {
	bt.mu.Lock()
	l := bt.lane(addr)
	l.flushing = true
	bt.wg.Add(1)
	bt.mu.Unlock()
	l.backoff, l.skipWaits = backoff, backoff
	bt.flush(l)
	return l
}

// In Cluster mode a lane whose last wait for callers was in vain is kept
// when its flusher stops, with its backoff, so that the next batch to its
// master does not wait in vain again. Masters come and go (failovers,
// resharding, nodes replaced at new addresses): the lanes kept for the
// addresses of masters long gone must not pile up in the map for ever,
// and the lanes of the masters in use keep their backoff.
func TestBatcherClusterIdleLanesBounded(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	cc := cl.Client(t)
	bt := newTestBatcher(t, cc)
	ctx := context.Background()
	script := testScript(t)

	liveAddr := cl.Node(0).Addr()
	const departed = 10 * maxIdleLanes
	for i := range departed {
		keepIdleLane(bt, fmt.Sprintf("10.0.%d.%d:6379", i/256, i%256), 1)
		if i%8 == 0 {
			// The live master's lane is used again and again, waiting in
			// vain each time.
			keepIdleLane(bt, liveAddr, 4)
		}
	}
	bt.mu.Lock()
	n := len(bt.lanes)
	live := bt.lanes[liveAddr]
	bt.mu.Unlock()
	if n > maxIdleLanes {
		t.Fatalf("%d lanes kept after %d masters came and went, want at most %d", n, departed, maxIdleLanes)
	}
	if live == nil || live.backoff != 4 {
		t.Fatalf("lane of the master in use: %+v, want kept with backoff 4", live)
	}

	// The lanes still work, for every master, and a new lane of the live
	// master starts afresh (or reuses the kept one) without trouble.
	for i := range 30 {
		if _, err := bt.run(ctx, time.Second, script, batchKeys(i), 1, ""); err != nil {
			t.Fatal(err)
		}
	}
}

// While few masters' lanes are kept, none is dropped: the backoff of
// every master in use survives its flusher's stop.
func TestBatcherClusterIdleLanesKeepBackoff(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	bt := newTestBatcher(t, cl.Client(t))
	for i := range 3 {
		keepIdleLane(bt, cl.Node(i).Addr(), 2<<i)
	}
	bt.mu.Lock()
	defer bt.mu.Unlock()
	for i := range 3 {
		l := bt.lanes[cl.Node(i).Addr()]
		if l == nil || l.backoff != 2<<i {
			t.Fatalf("lane of master %d after its flusher stopped: %+v, want kept with backoff %d", i, l, 2<<i)
		}
	}
}
