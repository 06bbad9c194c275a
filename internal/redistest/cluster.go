package redistest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of masters only (no replicas), each node a
// Server on its own loopback port with its own cluster bus port.
type Cluster struct {
	nodes []*Server
}

// StartCluster starts masters cluster-enabled servers, assigns the 16384
// slots evenly (CLUSTER ADDSLOTSRANGE), joins them (CLUSTER MEET) and waits
// until every node reports cluster_state:ok and knows every other node.
// The nodes use a short cluster-node-timeout (1s), so a killed node makes
// the cluster fail quickly.
func StartCluster(t testing.TB, masters int, opts ...Option) *Cluster {
	t.Helper()
	if masters < 1 {
		t.Fatalf("redistest: StartCluster needs at least 1 master, got %d", masters)
	}
	c := &Cluster{nodes: make([]*Server, masters)}
	for i := range c.nodes {
		c.nodes[i] = startServer(t, true, opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	clients := make([]*redis.Client, masters)
	for i, n := range c.nodes {
		clients[i] = redis.NewClient(ClientOptions(n.Addr()))
		defer clients[i].Close()
	}
	const slots = 16384
	for i, cl := range clients {
		lo := i * slots / masters
		hi := (i+1)*slots/masters - 1
		if err := cl.ClusterAddSlotsRange(ctx, lo, hi).Err(); err != nil {
			t.Fatalf("redistest: CLUSTER ADDSLOTSRANGE %d %d on %s: %v", lo, hi, c.nodes[i].Addr(), err)
		}
	}
	for i := 1; i < masters; i++ {
		n := c.nodes[i]
		err := clients[0].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", n.Port(), n.BusPort()).Err()
		if err != nil {
			t.Fatalf("redistest: CLUSTER MEET %s: %v", n.Addr(), err)
		}
	}
	if err := c.waitReady(ctx, clients); err != nil {
		t.Fatalf("redistest: cluster not ready: %v", err)
	}
	return c
}

// waitReady polls CLUSTER INFO on every node until the cluster is formed.
func (c *Cluster) waitReady(ctx context.Context, clients []*redis.Client) error {
	var last error
	for {
		last = nil
		for i, cl := range clients {
			if err := nodeReady(ctx, cl, len(clients)); err != nil {
				last = fmt.Errorf("%s: %w", c.nodes[i].Addr(), err)
				break
			}
		}
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(10 * time.Millisecond): // polling external processes
		}
	}
}

func nodeReady(ctx context.Context, cl *redis.Client, n int) error {
	info, err := cl.ClusterInfo(ctx).Result()
	if err != nil {
		return err
	}
	fields := parseInfo(info)
	want := map[string]string{
		"cluster_state":          "ok",
		"cluster_slots_assigned": "16384",
		"cluster_slots_ok":       "16384",
		"cluster_known_nodes":    strconv.Itoa(n),
		"cluster_size":           strconv.Itoa(n),
	}
	for k, v := range want {
		if fields[k] != v {
			return fmt.Errorf("%s=%q, want %q", k, fields[k], v)
		}
	}
	// Every node must see every other node connected, agreeing on the slots.
	nodes, err := cl.ClusterNodes(ctx).Result()
	if err != nil {
		return err
	}
	lines := strings.Split(strings.TrimSpace(nodes), "\n")
	if len(lines) != n {
		return fmt.Errorf("CLUSTER NODES lists %d nodes, want %d", len(lines), n)
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 9 || f[7] != "connected" || strings.Contains(f[2], "handshake") || strings.Contains(f[2], "fail") {
			return fmt.Errorf("node not settled: %q", l)
		}
	}
	return nil
}

func parseInfo(info string) map[string]string {
	m := make(map[string]string)
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok {
			m[k] = v
		}
	}
	return m
}

// Addrs returns the addresses of the nodes.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// Nodes returns the nodes, for faults (Kill, Restart, Stop, Cont).
func (c *Cluster) Nodes() []*Server { return c.nodes }

// Node returns node i.
func (c *Cluster) Node(i int) *Server { return c.nodes[i] }

// ClusterOptions returns go-redis cluster options suitable for tests.
func (c *Cluster) ClusterOptions() *redis.ClusterOptions {
	return &redis.ClusterOptions{
		Addrs:                 c.Addrs(),
		DialTimeout:           time.Second,
		ReadTimeout:           time.Second,
		WriteTimeout:          time.Second,
		ContextTimeoutEnabled: true,
		DialerRetries:         1,
		MaxRedirects:          3,
		MaxRetries:            -1,
	}
}

// Client returns a cluster client (see ClusterOptions), closed when the test
// ends. opts may adjust the options before the client is made.
func (c *Cluster) Client(t testing.TB, opts ...func(*redis.ClusterOptions)) *redis.ClusterClient {
	t.Helper()
	o := c.ClusterOptions()
	for _, f := range opts {
		f(o)
	}
	cl := redis.NewClusterClient(o)
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// FlushAll empties every node.
func (c *Cluster) FlushAll(t testing.TB) {
	t.Helper()
	for _, n := range c.nodes {
		n.FlushAll(t)
	}
}

// WaitReady waits (up to 30s) until every node reports a healthy cluster
// again, for instance after Restart of a killed node.
func (c *Cluster) WaitReady(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	clients := make([]*redis.Client, len(c.nodes))
	for i, n := range c.nodes {
		clients[i] = redis.NewClient(ClientOptions(n.Addr()))
		defer clients[i].Close()
	}
	if err := c.waitReady(ctx, clients); err != nil {
		t.Fatalf("redistest: cluster not ready: %v", err)
	}
}
