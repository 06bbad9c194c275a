package redistest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMaster is the name the sentinels of StartSentinel know the
// master by (FailoverOptions.MasterName).
const SentinelMaster = "ctxlock"

// Sentinel is a master with its replicas, each a Server, watched by one or
// more Sentinel processes (redis-server --sentinel): the setup a go-redis
// failover client (redis.NewFailoverClient) finds its master through.
type Sentinel struct {
	servers   []*Server // servers[0] was the master at start
	sentinels []*Server
}

// StartSentinel starts a master, replicas servers replicating it, and
// sentinels Sentinel processes watching it (quorum: a majority of them),
// and waits until every replica is in sync and every sentinel knows the
// master and all its replicas. opts apply to the master and the replicas.
// The sentinels mark a master down after 1s without answers and use a
// short failover timeout, so a Kill of the master fails over in seconds;
// Failover does it at once.
func StartSentinel(t testing.TB, replicas, sentinels int, opts ...Option) *Sentinel {
	t.Helper()
	if replicas < 1 || sentinels < 1 {
		t.Fatalf("redistest: StartSentinel needs at least 1 replica and 1 sentinel, got %d and %d", replicas, sentinels)
	}
	// Replicas sync at once, not after the 5s a diskless sync waits by
	// default for more replicas to join; each server may be a master later.
	opts = append([]Option{WithArgs("--repl-diskless-sync-delay", "0")}, opts...)
	master := startServer(t, false, opts)
	s := &Sentinel{servers: []*Server{master}}
	for range replicas {
		ropts := append(opts[:len(opts):len(opts)], WithArgs("--replicaof", "127.0.0.1", strconv.Itoa(master.Port())))
		s.servers = append(s.servers, startServer(t, false, ropts))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.waitReplicas(ctx, master); err != nil {
		t.Fatalf("redistest: replicas not in sync: %v", err)
	}
	mon := &monitored{name: SentinelMaster, addr: master.Addr(), quorum: sentinels/2 + 1}
	for range sentinels {
		s.sentinels = append(s.sentinels, startServer(t, false, []Option{func(c *config) { c.monitor = mon }}))
	}
	if err := s.waitSentinels(ctx, master); err != nil {
		t.Fatalf("redistest: sentinels not ready: %v", err)
	}
	return s
}

// sentinelArgs writes the Sentinel's config file (a Sentinel needs one it
// can rewrite) and returns the command line.
func (s *Server) sentinelArgs(m *monitored, extra []string) ([]string, error) {
	host, port, _ := splitAddr(m.addr)
	conf := fmt.Sprintf("sentinel monitor %s %s %s %d\n"+
		"sentinel down-after-milliseconds %[1]s 1000\n"+
		"sentinel failover-timeout %[1]s 5000\n", m.name, host, port, m.quorum)
	path := filepath.Join(s.dir, "sentinel.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	args := []string{
		path, "--sentinel",
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--daemonize", "no",
		"--logfile", filepath.Join(s.dir, "redis.log"),
		"--loglevel", "notice",
	}
	return append(args, extra...), nil
}

func splitAddr(addr string) (host, port string, err error) {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[:i], addr[i+1:], nil
		}
	}
	return "", "", fmt.Errorf("no port in %q", addr)
}

// Servers returns the master and the replicas (the master at start first),
// for faults (Kill, Restart, Stop, Cont).
func (s *Sentinel) Servers() []*Server { return s.servers }

// Sentinels returns the Sentinel processes.
func (s *Sentinel) Sentinels() []*Server { return s.sentinels }

// SentinelAddrs returns the sentinels' addresses.
func (s *Sentinel) SentinelAddrs() []string {
	addrs := make([]string, len(s.sentinels))
	for i, n := range s.sentinels {
		addrs[i] = n.Addr()
	}
	return addrs
}

// FailoverOptions returns go-redis failover options suitable for tests:
// short timeouts, context deadlines honoured.
func (s *Sentinel) FailoverOptions() *redis.FailoverOptions {
	return &redis.FailoverOptions{
		MasterName:            SentinelMaster,
		SentinelAddrs:         s.SentinelAddrs(),
		DialTimeout:           time.Second,
		ReadTimeout:           time.Second,
		WriteTimeout:          time.Second,
		ContextTimeoutEnabled: true,
		DialerRetries:         1,
		MaxRetries:            -1,
	}
}

// Client returns a failover client (see FailoverOptions), closed when the
// test ends. opts may adjust the options before the client is made.
func (s *Sentinel) Client(t testing.TB, opts ...func(*redis.FailoverOptions)) *redis.Client {
	t.Helper()
	o := s.FailoverOptions()
	for _, f := range opts {
		f(o)
	}
	c := redis.NewFailoverClient(o)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Master returns the server the first sentinel names as the master.
func (s *Sentinel) Master(t testing.TB) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := s.master(ctx, s.sentinels[0])
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return m
}

// Failover has the first sentinel fail the master over to a replica
// (SENTINEL FAILOVER: at once, without waiting for the master to be found
// down) and waits as WaitFailover does. It returns the new master.
func (s *Sentinel) Failover(t testing.TB) *Server {
	t.Helper()
	old := s.Master(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sc := redis.NewSentinelClient(ClientOptions(s.sentinels[0].Addr()))
	defer sc.Close()
	if err := sc.Failover(ctx, SentinelMaster).Err(); err != nil {
		t.Fatalf("redistest: SENTINEL FAILOVER: %v", err)
	}
	m, err := s.WaitFailover(ctx, old)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return m
}

// WaitFailover waits until every sentinel names a master other than old,
// that master says it is one, and the other replicas that run are in sync
// with it. It returns the new master.
//
// It does not wait for old: a sentinel turns an old master that is still
// running into a replica of the new one only when it next polls it, up to
// 10s later, and until then old takes writes from clients still connected
// to it.
func (s *Sentinel) WaitFailover(ctx context.Context, old *Server) (*Server, error) {
	var last error
	for {
		m, err := s.agreedMaster(ctx)
		switch {
		case err != nil:
			last = err
		case m == old:
			last = fmt.Errorf("sentinels still name %s", old.Addr())
		default:
			if last = s.waitReplicasOnce(ctx, m, old); last == nil {
				return m, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("failover: %w (last: %v)", ctx.Err(), last)
		case <-time.After(20 * time.Millisecond): // polling external processes
		}
	}
}

// agreedMaster returns the master every sentinel names, or an error when
// they differ.
func (s *Sentinel) agreedMaster(ctx context.Context) (*Server, error) {
	var m *Server
	for _, sn := range s.sentinels {
		got, err := s.master(ctx, sn)
		if err != nil {
			return nil, err
		}
		if m != nil && got != m {
			return nil, fmt.Errorf("sentinels disagree: %s and %s", m.Addr(), got.Addr())
		}
		m = got
	}
	if role, err := role(ctx, m); err != nil || role != "master" {
		return nil, fmt.Errorf("%s is %q (%v), not yet master", m.Addr(), role, err)
	}
	return m, nil
}

// master asks sn which server is the master.
func (s *Sentinel) master(ctx context.Context, sn *Server) (*Server, error) {
	sc := redis.NewSentinelClient(ClientOptions(sn.Addr()))
	defer sc.Close()
	addr, err := sc.GetMasterAddrByName(ctx, SentinelMaster).Result()
	if err != nil {
		return nil, fmt.Errorf("SENTINEL GET-MASTER-ADDR-BY-NAME on %s: %w", sn.Addr(), err)
	}
	if len(addr) != 2 {
		return nil, fmt.Errorf("SENTINEL GET-MASTER-ADDR-BY-NAME on %s: %q", sn.Addr(), addr)
	}
	for _, srv := range s.servers {
		if strconv.Itoa(srv.Port()) == addr[1] {
			return srv, nil
		}
	}
	return nil, fmt.Errorf("sentinel %s names an unknown master %s:%s", sn.Addr(), addr[0], addr[1])
}

// role returns the ROLE of srv: "master" or "slave".
func role(ctx context.Context, srv *Server) (string, error) {
	c := redis.NewClient(ClientOptions(srv.Addr()))
	defer c.Close()
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return "", err
	}
	return parseInfo(info)["role"], nil
}

// waitReplicas polls until every server but master replicates master with
// its link up.
func (s *Sentinel) waitReplicas(ctx context.Context, master *Server) error {
	for {
		last := s.waitReplicasOnce(ctx, master, nil)
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

// waitReplicasOnce checks that every running server but master and skip
// is its replica with the link up.
func (s *Sentinel) waitReplicasOnce(ctx context.Context, master, skip *Server) error {
	for _, srv := range s.servers {
		if srv == master || srv == skip || !srv.running() {
			continue
		}
		c := redis.NewClient(ClientOptions(srv.Addr()))
		info, err := c.Info(ctx, "replication").Result()
		c.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", srv.Addr(), err)
		}
		f := parseInfo(info)
		if f["role"] != "slave" || f["master_port"] != strconv.Itoa(master.Port()) || f["master_link_status"] != "up" {
			return fmt.Errorf("%s: role %s, master port %s, link %s", srv.Addr(), f["role"], f["master_port"], f["master_link_status"])
		}
	}
	return nil
}

// WaitAcks waits until every running replica acknowledges the master's
// writes (WAIT), and fails the test if that takes over 10s. A replica in
// sync (as StartSentinel and WaitFailover leave it) may not be yet: after a
// diskless sync the master streams writes to it only once it has sent its
// first acknowledgement, up to a second later.
func (s *Sentinel) WaitAcks(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	master := s.Master(t)
	replicas := 0
	for _, srv := range s.servers {
		if srv != master && srv.running() {
			replicas++
		}
	}
	c := redis.NewClient(ClientOptions(master.Addr()))
	defer c.Close()
	for {
		// WAIT counts the replicas that have this connection's last write:
		// a PUBLISH, which is replicated and leaves no key behind.
		var acked *redis.IntCmd
		_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Publish(ctx, "redistest:acks", "")
			acked = redis.NewIntCmd(ctx, "wait", replicas, 100)
			return p.Process(ctx, acked)
		})
		if err == nil && acked.Val() >= int64(replicas) {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("redistest: %d replicas not acknowledging after 10s (last: %d, %v)", replicas, acked.Val(), err)
		}
	}
}

// waitSentinels polls until every sentinel names master and lists every
// replica as a healthy one.
func (s *Sentinel) waitSentinels(ctx context.Context, master *Server) error {
	var last error
	for {
		last = s.sentinelsReady(ctx, master)
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

func (s *Sentinel) sentinelsReady(ctx context.Context, master *Server) error {
	for _, sn := range s.sentinels {
		m, err := s.master(ctx, sn)
		if err != nil {
			return err
		}
		if m != master {
			return fmt.Errorf("sentinel %s names %s, want %s", sn.Addr(), m.Addr(), master.Addr())
		}
		sc := redis.NewSentinelClient(ClientOptions(sn.Addr()))
		reps, err := sc.Replicas(ctx, SentinelMaster).Result()
		sc.Close()
		if err != nil {
			return fmt.Errorf("SENTINEL REPLICAS on %s: %w", sn.Addr(), err)
		}
		if len(s.sentinels) > 1 {
			// Sentinels find each other through the master's hello channel
			// (every 2s): until then a failover needs longer.
			sc := redis.NewSentinelClient(ClientOptions(sn.Addr()))
			m, err := sc.Master(ctx, SentinelMaster).Result()
			sc.Close()
			if err != nil {
				return fmt.Errorf("SENTINEL MASTER on %s: %w", sn.Addr(), err)
			}
			if m["num-other-sentinels"] != strconv.Itoa(len(s.sentinels)-1) {
				return fmt.Errorf("sentinel %s knows %s other sentinels, want %d", sn.Addr(), m["num-other-sentinels"], len(s.sentinels)-1)
			}
		}
		healthy := 0
		for _, r := range reps {
			if r["flags"] == "slave" && r["master-link-status"] == "ok" {
				healthy++
			}
		}
		if healthy != len(s.servers)-1 {
			return fmt.Errorf("sentinel %s knows %d healthy replicas, want %d", sn.Addr(), healthy, len(s.servers)-1)
		}
	}
	return nil
}

// running reports whether the process has been started and not exited.
func (s *Server) running() bool {
	_, _, ok := s.proc.Running()
	return ok
}

// WaitHealthy waits until every sentinel names the same master, that
// server says it is one, every other running server replicates it with its
// link up, and every sentinel lists them all as healthy replicas: the state
// from which Sentinel can fail over again. It returns the master.
func (s *Sentinel) WaitHealthy(ctx context.Context) (*Server, error) {
	var last error
	for {
		m, err := s.agreedMaster(ctx)
		if err == nil {
			if err = s.waitReplicasOnce(ctx, m, nil); err == nil {
				err = s.sentinelsReady(ctx, m)
			}
		}
		if err == nil {
			return m, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("not healthy: %w (last: %v)", ctx.Err(), last)
		case <-time.After(20 * time.Millisecond): // polling external processes
		}
	}
}

// WaitMaster waits until every sentinel names the same master, that server
// says it is one, and at least replicas replicas are online on it (INFO
// replication). It returns the master. Servers that have not yet followed
// a failover (a demoted master that Sentinel has not yet turned into a
// replica) may still be out of line.
func (s *Sentinel) WaitMaster(ctx context.Context, replicas int) (*Server, error) {
	var last error
	for {
		m, err := s.agreedMaster(ctx)
		if err == nil {
			var online int
			if online, err = onlineReplicas(ctx, m); err == nil && online < replicas {
				err = fmt.Errorf("%s has %d replicas online, want %d", m.Addr(), online, replicas)
			}
		}
		if err == nil {
			return m, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no master with %d replicas: %w (last: %v)", replicas, ctx.Err(), last)
		case <-time.After(20 * time.Millisecond): // polling external processes
		}
	}
}

// onlineReplicas counts the replicas srv lists as online.
func onlineReplicas(ctx context.Context, srv *Server) (int, error) {
	c := redis.NewClient(ClientOptions(srv.Addr()))
	defer c.Close()
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return 0, err
	}
	n := 0
	for k, v := range parseInfo(info) {
		if strings.HasPrefix(k, "slave") && strings.Contains(v, "state=online") {
			n++
		}
	}
	return n, nil
}

// RestartAsReplica restarts srv, one of the servers, after Kill, configured
// as a replica of master (as a Sentinel's config rewrite would have left a
// replica), and returns at once: it syncs in the background.
func (s *Sentinel) RestartAsReplica(srv, master *Server) {
	srv.t.Helper()
	args := make([]string, 0, len(srv.args)+3)
	for i := 0; i < len(srv.args); i++ {
		if srv.args[i] == "--replicaof" && i+2 < len(srv.args) {
			i += 2
			continue
		}
		args = append(args, srv.args[i])
	}
	srv.args = append(args, "--replicaof", "127.0.0.1", strconv.Itoa(master.Port()))
	srv.Restart()
}
