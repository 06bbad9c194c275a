package redistest

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster, each node a Server on its own loopback port
// with its own cluster bus port: masters only (StartCluster), or masters
// with replicas (StartClusterWithReplicas).
type Cluster struct {
	nodes    []*Server // masters at start first, then their replicas
	masters  int
	replicas int // per master
}

// StartCluster starts masters cluster-enabled servers, assigns the 16384
// slots evenly (CLUSTER ADDSLOTSRANGE), joins them (CLUSTER MEET) and waits
// until every node reports cluster_state:ok and knows every other node.
// The nodes use a short cluster-node-timeout (1s), so a killed node makes
// the cluster fail quickly.
func StartCluster(t testing.TB, masters int, opts ...Option) *Cluster {
	t.Helper()
	return StartClusterWithReplicas(t, masters, 0, opts...)
}

// StartClusterWithReplicas starts a cluster as StartCluster does, with
// replicas replicas of each master (CLUSTER REPLICATE), and also waits
// until every replica is in sync. With the short cluster-node-timeout (1s)
// a killed master's replica takes over within a few seconds (see
// WaitFailover).
func StartClusterWithReplicas(t testing.TB, masters, replicas int, opts ...Option) *Cluster {
	t.Helper()
	if masters < 1 || replicas < 0 {
		t.Fatalf("redistest: a cluster needs at least 1 master and no negative replicas, got %d and %d", masters, replicas)
	}
	// Replicas sync at once, not after the 5s a diskless sync waits by
	// default for more replicas to join.
	opts = append([]Option{WithArgs("--repl-diskless-sync-delay", "0")}, opts...)
	c := &Cluster{nodes: make([]*Server, masters*(1+replicas)), masters: masters, replicas: replicas}
	for i := range c.nodes {
		c.nodes[i] = startServer(t, true, opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	clients := make([]*redis.Client, len(c.nodes))
	for i, n := range c.nodes {
		clients[i] = redis.NewClient(ClientOptions(n.Addr()))
		defer clients[i].Close()
	}
	const slots = 16384
	for i, cl := range clients[:masters] {
		lo := i * slots / masters
		hi := (i+1)*slots/masters - 1
		if err := cl.ClusterAddSlotsRange(ctx, lo, hi).Err(); err != nil {
			t.Fatalf("redistest: CLUSTER ADDSLOTSRANGE %d %d on %s: %v", lo, hi, c.nodes[i].Addr(), err)
		}
	}
	for _, n := range c.nodes[1:] {
		err := clients[0].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", n.Port(), n.BusPort()).Err()
		if err != nil {
			t.Fatalf("redistest: CLUSTER MEET %s: %v", n.Addr(), err)
		}
	}
	if replicas > 0 {
		if err := c.replicate(ctx, clients); err != nil {
			t.Fatalf("redistest: %v", err)
		}
	}
	if err := c.waitReady(ctx, clients); err != nil {
		t.Fatalf("redistest: cluster not ready: %v", err)
	}
	return c
}

// replicate makes node masters+k*masters+i a replica of master i, once it
// knows that master, and waits until each replica is in sync.
func (c *Cluster) replicate(ctx context.Context, clients []*redis.Client) error {
	ids := make([]string, c.masters)
	for i, cl := range clients[:c.masters] {
		id, err := cl.Do(ctx, "CLUSTER", "MYID").Text()
		if err != nil {
			return fmt.Errorf("CLUSTER MYID on %s: %w", c.nodes[i].Addr(), err)
		}
		ids[i] = id
	}
	for j := c.masters; j < len(c.nodes); j++ {
		master := (j - c.masters) % c.masters
		var err error
		for {
			// A node refuses to replicate a node it has not heard of yet.
			if err = clients[j].Do(ctx, "CLUSTER", "REPLICATE", ids[master]).Err(); err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("CLUSTER REPLICATE on %s: %w (last: %v)", c.nodes[j].Addr(), ctx.Err(), err)
			case <-time.After(10 * time.Millisecond): // polling external processes
			}
		}
	}
	for j := c.masters; j < len(c.nodes); j++ {
		for {
			info, err := clients[j].Info(ctx, "replication").Result()
			if err == nil && parseInfo(info)["master_link_status"] == "up" {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("replica %s not in sync: %w (last: %v)", c.nodes[j].Addr(), ctx.Err(), err)
			case <-time.After(10 * time.Millisecond): // polling external processes
			}
		}
	}
	return nil
}

// waitReady polls CLUSTER INFO on every node that runs until the cluster
// is formed.
func (c *Cluster) waitReady(ctx context.Context, clients []*redis.Client) error {
	var last error
	for {
		last = nil
		for i, cl := range clients {
			if !c.nodes[i].running() {
				continue
			}
			if err := c.nodeReady(ctx, cl); err != nil {
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

// nodeReady checks that cl's node sees a healthy cluster: every slot
// served, the masters and replicas it should know (nodes that do not run
// are known as failed), and every node that runs connected.
func (c *Cluster) nodeReady(ctx context.Context, cl *redis.Client) error {
	info, err := cl.ClusterInfo(ctx).Result()
	if err != nil {
		return err
	}
	fields := parseInfo(info)
	want := map[string]string{
		"cluster_state":          "ok",
		"cluster_slots_assigned": "16384",
		"cluster_slots_ok":       "16384",
		"cluster_known_nodes":    strconv.Itoa(len(c.nodes)),
		"cluster_size":           strconv.Itoa(c.masters),
	}
	for k, v := range want {
		if fields[k] != v {
			return fmt.Errorf("%s=%q, want %q", k, fields[k], v)
		}
	}
	nodes, err := cl.ClusterNodes(ctx).Result()
	if err != nil {
		return err
	}
	lines := strings.Split(strings.TrimSpace(nodes), "\n")
	if len(lines) != len(c.nodes) {
		return fmt.Errorf("CLUSTER NODES lists %d nodes, want %d", len(lines), len(c.nodes))
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 8 {
			return fmt.Errorf("odd CLUSTER NODES line %q", l)
		}
		if srv := c.byAddr(f[1]); srv != nil && !srv.running() {
			if !strings.Contains(f[2], "fail") || strings.Contains(f[2], "fail?") {
				return fmt.Errorf("stopped node not yet failed: %q", l)
			}
			continue
		}
		if f[7] != "connected" || strings.Contains(f[2], "handshake") || strings.Contains(f[2], "fail") {
			return fmt.Errorf("node not settled: %q", l)
		}
	}
	return nil
}

// byAddr returns the node whose address CLUSTER NODES gives as
// "ip:port@busport", or nil.
func (c *Cluster) byAddr(field string) *Server {
	addr, _, _ := strings.Cut(field, "@")
	for _, n := range c.nodes {
		if n.Addr() == addr {
			return n
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

// FlushAll empties every master that runs (replicas follow).
func (c *Cluster) FlushAll(t testing.TB) {
	t.Helper()
	for _, n := range c.nodes {
		if !n.running() {
			continue
		}
		if c.replicas > 0 {
			r, err := role(context.Background(), n)
			if err != nil {
				t.Fatalf("redistest: role of %s: %v", n.Addr(), err)
			}
			if r != "master" {
				continue
			}
		}
		n.FlushAll(t)
	}
}

// MasterFor returns the node that is master of key's slot now, as a fresh
// cluster client finds it.
func (c *Cluster) MasterFor(t testing.TB, key string) *Server {
	t.Helper()
	cl := redis.NewClusterClient(c.ClusterOptions())
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	node, err := cl.MasterForKey(ctx, key)
	if err != nil {
		t.Fatalf("redistest: master of %q: %v", key, err)
	}
	srv := c.byAddr(node.Options().Addr)
	if srv == nil {
		t.Fatalf("redistest: master of %q is an unknown node %s", key, node.Options().Addr)
	}
	return srv
}

// WaitReady waits (up to 30s) until every node that runs reports a healthy
// cluster again: after Restart of a killed node, or after a master was
// killed, until its replica has taken over (and the others know the killed
// one failed).
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

// slotOwner returns the master that cl's node names in CLUSTER SHARDS as
// the owner of slot.
func (c *Cluster) slotOwner(ctx context.Context, cl *redis.Client, slot int) (*Server, error) {
	shards, err := cl.ClusterShards(ctx).Result()
	if err != nil {
		return nil, err
	}
	for _, sh := range shards {
		for _, r := range sh.Slots {
			if int(r.Start) > slot || slot > int(r.End) {
				continue
			}
			for _, n := range sh.Nodes {
				if n.Role != "master" {
					continue
				}
				if srv := c.byAddr(net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10))); srv != nil {
					return srv, nil
				}
				return nil, fmt.Errorf("slot %d is on an unknown node %s:%d", slot, n.IP, n.Port)
			}
		}
	}
	return nil, fmt.Errorf("slot %d is not served", slot)
}

// MoveSlot moves slot and its keys to the master to, as redis-cli --cluster
// reshard does (see BeginMove and SlotMove.Finish). It returns once every
// running master names to as the slot's owner. Clients working on the slot
// meanwhile meet ASK redirections and TRYAGAIN replies (a multi-key command
// whose keys are split between the two nodes, or not all there). pause
// stretches the migration as a slot with many keys would: it is waited
// after the slot is marked and after each MIGRATE.
func (c *Cluster) MoveSlot(t testing.TB, slot int, to *Server, pause time.Duration) {
	t.Helper()
	if m := c.BeginMove(t, slot, to); m != nil {
		m.Finish(t, pause)
	}
}

// SlotMove is a slot marked as migrating (BeginMove), until Finish.
type SlotMove struct {
	c        *Cluster
	slot     int
	from, to *Server
	toID     string
}

// BeginMove marks slot as migrating from its master to the master to:
// CLUSTER SETSLOT IMPORTING on to, MIGRATING on the owner, and moves no key.
// Until Finish, a command on the slot's keys runs on the old owner only if
// all its keys are still there. It returns nil when to owns the slot
// already.
func (c *Cluster) BeginMove(t testing.TB, slot int, to *Server) *SlotMove {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := c.beginMove(ctx, slot, to)
	if err != nil {
		t.Fatalf("redistest: move slot %d to %s: %v", slot, to.Addr(), err)
	}
	return m
}

func (c *Cluster) beginMove(ctx context.Context, slot int, to *Server) (*SlotMove, error) {
	client, done := c.nodeClients()
	defer done()
	// A node's claim to a slot beats another's by its config epoch, and
	// each learns the others' epochs by gossip (a ping a second or so):
	// moved again before that, a slot could go back to a node that has let
	// go of it.
	if err := c.waitEpochsKnown(ctx, client); err != nil {
		return nil, err
	}
	from, err := c.slotOwner(ctx, client(to), slot)
	if err != nil {
		return nil, err
	}
	if from == to {
		return nil, nil
	}
	fromID, err := client(from).Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		return nil, err
	}
	toID, err := client(to).Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		return nil, err
	}
	if err := client(to).Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", fromID).Err(); err != nil {
		return nil, fmt.Errorf("SETSLOT IMPORTING: %w", err)
	}
	if err := client(from).Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", toID).Err(); err != nil {
		return nil, fmt.Errorf("SETSLOT MIGRATING: %w", err)
	}
	return &SlotMove{c: c, slot: slot, from: from, to: to, toID: toID}, nil
}

// Finish completes the move: MIGRATE of the slot's keys ten at a time
// (waiting pause before each) until none is left, then SETSLOT NODE on the
// new owner, the old one and the other masters. It returns once every
// running master names the new owner.
func (m *SlotMove) Finish(t testing.TB, pause time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.finish(ctx, pause); err != nil {
		t.Fatalf("redistest: move slot %d to %s: %v", m.slot, m.to.Addr(), err)
	}
}

func (m *SlotMove) finish(ctx context.Context, pause time.Duration) error {
	c, slot, from, to := m.c, m.slot, m.from, m.to
	client, done := c.nodeClients()
	defer done()
	for {
		time.Sleep(pause) // the migration's own pace (a fault injected), not synchronisation
		keys, err := client(from).ClusterGetKeysInSlot(ctx, slot, 10).Result()
		if err != nil {
			return fmt.Errorf("GETKEYSINSLOT: %w", err)
		}
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", "127.0.0.1", to.Port(), "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		if err := client(from).Do(ctx, args...).Err(); err != nil && err != redis.Nil {
			return fmt.Errorf("MIGRATE: %w", err)
		}
	}
	masters := []*Server{to, from}
	for _, n := range c.nodes {
		if n != to && n != from && n.running() {
			if r, err := role(ctx, n); err == nil && r == "master" {
				masters = append(masters, n)
			}
		}
	}
	for _, n := range masters {
		if err := client(n).Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", m.toID).Err(); err != nil {
			return fmt.Errorf("SETSLOT NODE on %s: %w", n.Addr(), err)
		}
	}
	if err := c.waitEpochsKnown(ctx, client); err != nil {
		return err
	}
	for _, n := range masters {
		for {
			owner, err := c.slotOwner(ctx, client(n), slot)
			if err == nil && owner == to {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s does not name the new owner: %w (last: %v, %v)", n.Addr(), ctx.Err(), owner, err)
			case <-time.After(5 * time.Millisecond): // polling external processes
			}
		}
	}
	return nil
}

// nodeClients returns a function giving a client per node, made on first
// use, and one closing them all.
func (c *Cluster) nodeClients() (client func(*Server) *redis.Client, done func()) {
	clients := map[*Server]*redis.Client{}
	client = func(s *Server) *redis.Client {
		if clients[s] == nil {
			clients[s] = redis.NewClient(ClientOptions(s.Addr()))
		}
		return clients[s]
	}
	return client, func() {
		for _, cl := range clients {
			cl.Close()
		}
	}
}

// waitEpochsKnown polls until every running node knows every other's
// current config epoch (CLUSTER NODES).
func (c *Cluster) waitEpochsKnown(ctx context.Context, client func(*Server) *redis.Client) error {
	for {
		err := c.epochsKnown(ctx, client)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("config epochs not known everywhere: %w (last: %v)", ctx.Err(), err)
		case <-time.After(10 * time.Millisecond): // polling external processes
		}
	}
}

func (c *Cluster) epochsKnown(ctx context.Context, client func(*Server) *redis.Client) error {
	own := map[string]string{}     // node id -> its own config epoch
	views := []map[string]string{} // each node's view: node id -> epoch
	for _, n := range c.nodes {
		if !n.running() {
			continue
		}
		out, err := client(n).ClusterNodes(ctx).Result()
		if err != nil {
			return err
		}
		view := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(l)
			if len(f) < 8 {
				return fmt.Errorf("odd CLUSTER NODES line %q", l)
			}
			view[f[0]] = f[6]
			if strings.Contains(f[2], "myself") {
				own[f[0]] = f[6]
			}
		}
		views = append(views, view)
	}
	for _, view := range views {
		for id, epoch := range own {
			if view[id] != epoch {
				return fmt.Errorf("node %s has config epoch %s, known as %q", id, epoch, view[id])
			}
		}
	}
	return nil
}
