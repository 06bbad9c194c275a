package redistest_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock/internal/redistest"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestServerKillRestart(t *testing.T) {
	s := redistest.StartServer(t)
	if s.Port() == 6379 {
		t.Fatal("used 6379")
	}
	c := s.Client(t)
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Kill()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("ping after kill succeeded")
	}
	s.Restart()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("ping after restart: %v", err)
	}
	if n, _ := c.Exists(ctx, "k").Result(); n != 0 {
		t.Fatal("data survived restart without persistence")
	}
}

func TestNodes(t *testing.T) {
	nodes := redistest.StartNodes(t, 3)
	seen := map[string]bool{}
	for _, n := range nodes {
		if seen[n.Addr()] {
			t.Fatal("duplicate addr")
		}
		seen[n.Addr()] = true
		if err := n.Client(t).Ping(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	c := cl.Client(t)
	ctx := context.Background()
	for _, k := range []string{"a", "b", "c", "d", "e", "f"} {
		if err := c.Set(ctx, k, k, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	masters := 0
	var mu sync.Mutex
	if err := c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		mu.Lock()
		masters++
		mu.Unlock()
		return m.Ping(ctx).Err()
	}); err != nil {
		t.Fatal(err)
	}
	if masters != 3 {
		t.Fatalf("masters = %d, want 3", masters)
	}
}

func TestStopCont(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	s.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("ping of a frozen server succeeded")
	}
	s.Cont()
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("ping after Cont: %v", err)
	}
}

func TestSentinelFailover(t *testing.T) {
	s := redistest.StartSentinel(t, 1, 1)
	first := s.Master(t)
	if first != s.Servers()[0] {
		t.Fatalf("master at start is %s, want %s", first.Addr(), s.Servers()[0].Addr())
	}
	c := s.Client(t)
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// The write reaches the replica before the failover.
	if n, err := first.Client(t).Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT = %d, %v; want 1 replica", n, err)
	}
	next := s.Failover(t)
	if next == first {
		t.Fatal("Failover kept the master")
	}
	if got := s.Master(t); got != next {
		t.Fatalf("Master = %s after failover, want %s", got.Addr(), next.Addr())
	}
	// The failover client follows when its sentinel tells it of the switch;
	// until then it may still write to the old master.
	nc := next.Client(t)
	var got string
	for i := 0; got != "v2" && i < 250; i++ {
		if i > 0 {
			time.Sleep(20 * time.Millisecond) // polling external processes
		}
		_ = c.Set(ctx, "k2", "v2", 0).Err()
		got, _ = nc.Get(ctx, "k2").Result()
	}
	if got != "v2" {
		t.Fatal("the failover client never wrote to the new master")
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("k after failover = %q, %v", v, err)
	}
}

func TestClusterWithReplicasFailover(t *testing.T) {
	cl := redistest.StartClusterWithReplicas(t, 3, 1)
	if n := len(cl.Nodes()); n != 6 {
		t.Fatalf("%d nodes, want 6", n)
	}
	c := cl.Client(t)
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	old := cl.MasterFor(t, "k")
	if n, err := old.Client(t).Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT = %d, %v; want 1 replica", n, err)
	}
	old.Kill()
	cl.WaitReady(t)
	next := cl.MasterFor(t, "k")
	if next == old {
		t.Fatal("the killed node is still the key's master")
	}
	if v, err := next.Client(t).Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("k on the promoted replica = %q, %v", v, err)
	}
	cl.FlushAll(t)
}

func TestClusterMoveSlot(t *testing.T) {
	cl := redistest.StartCluster(t, 2)
	c := cl.Client(t)
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	slot, err := c.ClusterKeySlot(ctx, "k").Result()
	if err != nil {
		t.Fatal(err)
	}
	from := cl.MasterFor(t, "k")
	to := cl.Node(0)
	if to == from {
		to = cl.Node(1)
	}
	cl.MoveSlot(t, int(slot), to, 0)
	if got := cl.MasterFor(t, "k"); got != to {
		t.Fatalf("after MoveSlot the key's master is %s, want %s", got.Addr(), to.Addr())
	}
	if v, err := to.Client(t).Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("k on the new owner = %q, %v", v, err)
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("k through the cluster client = %q, %v", v, err)
	}
}
