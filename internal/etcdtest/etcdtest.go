// Package etcdtest starts throwaway etcd servers for tests: one member, or a
// cluster of several, on free loopback ports (never 2379 or 2380).
//
// Every member keeps its data in its own temporary directory (on /dev/shm
// when the machine has it, so that etcd's fsyncs cost little), runs with a
// short heartbeat and election timeout (10ms and 100ms, so that a cluster
// elects a leader at once and the shortest lease is one second), and is
// stopped and its directory removed when the test ends (t.Cleanup).
//
// The server binary is `etcd` on PATH (Debian's etcd-server package), or
// the one CTXLOCK_ETCD_BIN names (to test against another etcd release).
// When it is missing the test is skipped, unless the environment asks for etcd
// (CTXLOCK_REQUIRE_ETCD=1 or CI=true), in which case it fails.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock/internal/testport"
	"github.com/ctxlock/ctxlock/internal/testproc"
)

// Timeouts for waiting on the external processes.
const (
	startTimeout = 30 * time.Second
	pollEvery    = 10 * time.Millisecond
)

// Require makes the availability decision: it returns the path of the etcd
// binary (CTXLOCK_ETCD_BIN if set, else etcd on PATH), skips the test when
// it is missing, or fails it when CTXLOCK_REQUIRE_ETCD=1 or CI=true.
func Require(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("CTXLOCK_ETCD_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("CTXLOCK_ETCD_BIN=%s: %v", p, err)
		}
		return p
	}
	if p, err := exec.LookPath("etcd"); err == nil {
		return p
	}
	const install = "install the etcd server (apt-get install -y etcd-server)"
	if os.Getenv("CTXLOCK_REQUIRE_ETCD") == "1" || os.Getenv("CI") == "true" {
		t.Fatalf("etcd not found on PATH but required (CTXLOCK_REQUIRE_ETCD=1 or CI=true): %s", install)
	}
	t.Skipf("etcd not found on PATH; %s or set CTXLOCK_REQUIRE_ETCD=1 to fail", install)
	return ""
}

// Cluster is a set of etcd members that form one cluster.
type Cluster struct {
	// Members are the cluster's servers, in the order of Endpoints.
	Members []*Server
}

// Server is one etcd member.
type Server struct {
	t          testing.TB
	bin        string
	name       string
	dir        string // temporary directory: data/ and the log
	clientPort int
	peerPort   int
	cluster    string // --initial-cluster
	token      string
	args       []string // more command-line arguments

	proc testproc.Proc
}

// Start starts a one-member cluster and waits until it has a leader
// (itself). args are added to etcd's command line ("--auth-token-ttl", "1").
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	return startClusterArgs(t, 1, args).Members[0]
}

// StartCluster starts a cluster of n members and waits until every member
// is healthy (the cluster has a leader).
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	return startClusterArgs(t, n, nil)
}

func startClusterArgs(t testing.TB, n int, args []string) *Cluster {
	t.Helper()
	bin := Require(t)
	var lastErr error
	for range 5 {
		c, err := startCluster(t, bin, n, args)
		if err == nil {
			return c
		}
		lastErr = err
		if !errors.Is(err, errBind) {
			break
		}
	}
	t.Fatalf("etcdtest: start a cluster of %d: %v", n, lastErr)
	return nil
}

var errBind = errors.New("address in use")

func startCluster(t testing.TB, bin string, n int, args []string) (*Cluster, error) {
	c := &Cluster{}
	token := fmt.Sprintf("ctxlock-%d-%d", os.Getpid(), time.Now().UnixNano())
	var peers []string
	for i := range n {
		s := &Server{t: t, bin: bin, name: "m" + strconv.Itoa(i), token: token, args: args}
		var err error
		if s.clientPort, err = testport.Free(); err != nil {
			return nil, err
		}
		if s.peerPort, err = testport.Free(); err != nil {
			return nil, err
		}
		if s.peerPort == s.clientPort || (i > 0 && usedBy(c, s)) {
			return nil, fmt.Errorf("%w: port picked twice", errBind)
		}
		if s.dir, err = os.MkdirTemp(tempRoot(), "etcdtest-"); err != nil {
			return nil, err
		}
		t.Cleanup(s.cleanup)
		peers = append(peers, s.name+"="+s.peerURL())
		c.Members = append(c.Members, s)
	}
	for _, s := range c.Members {
		s.cluster = strings.Join(peers, ",")
		if err := s.launch(); err != nil {
			c.kill()
			return nil, err
		}
	}
	for _, s := range c.Members {
		if err := s.waitHealthy(); err != nil {
			c.kill()
			return nil, err
		}
	}
	return c, nil
}

func usedBy(c *Cluster, s *Server) bool {
	for _, o := range c.Members {
		if o.clientPort == s.clientPort || o.peerPort == s.peerPort ||
			o.clientPort == s.peerPort || o.peerPort == s.clientPort {
			return true
		}
	}
	return false
}

func (c *Cluster) kill() {
	for _, s := range c.Members {
		s.Kill()
	}
}

// Endpoints returns the members' client addresses ("127.0.0.1:port"), as
// clientv3.Config.Endpoints takes them.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.Members))
	for i, s := range c.Members {
		out[i] = s.Addr()
	}
	return out
}

// Leader returns the index of the member that is the leader now, or -1
// when no member answers with one.
func (c *Cluster) Leader() int {
	for i, s := range c.Members {
		if s.isLeader() {
			return i
		}
	}
	return -1
}

// tempRoot is where member directories go: /dev/shm (memory) when
// writable, so that fsync is cheap, else the default temporary directory.
func tempRoot() string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if f, err := os.CreateTemp("/dev/shm", "etcdtest-probe-"); err == nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
			return "/dev/shm"
		}
	}
	return ""
}

func (s *Server) peerURL() string   { return "http://127.0.0.1:" + strconv.Itoa(s.peerPort) }
func (s *Server) clientURL() string { return "http://127.0.0.1:" + strconv.Itoa(s.clientPort) }
func (s *Server) logPath() string   { return filepath.Join(s.dir, "etcd.log") }

// Addr returns the client address, "127.0.0.1:port".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.clientPort)) }

// Port returns the client port.
func (s *Server) Port() int { return s.clientPort }

// launch starts the process (without waiting for it to be healthy).
func (s *Server) launch() error {
	logf, err := os.OpenFile(s.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(s.bin,
		"--name", s.name,
		"--data-dir", filepath.Join(s.dir, "data"),
		"--listen-client-urls", s.clientURL(),
		"--advertise-client-urls", s.clientURL(),
		"--listen-peer-urls", s.peerURL(),
		"--initial-advertise-peer-urls", s.peerURL(),
		"--initial-cluster", s.cluster,
		"--initial-cluster-state", "new",
		"--initial-cluster-token", s.token,
		"--heartbeat-interval", "10",
		"--election-timeout", "100",
		"--logger", "zap",
		"--log-outputs", "stderr",
		"--log-level", "warn",
	)
	cmd.Args = append(cmd.Args, s.args...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	_, err = s.proc.Start(cmd)
	return err
}

// waitHealthy polls the member's /health endpoint until it reports a
// healthy cluster (a leader elected).
func (s *Server) waitHealthy() error {
	_, exited, ok := s.proc.Running()
	if !ok {
		return fmt.Errorf("etcd %s is not running: %s", s.Addr(), s.LogTail())
	}
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-exited:
			log := s.LogTail()
			if strings.Contains(log, "address already in use") {
				return fmt.Errorf("%w: %s", errBind, log)
			}
			return fmt.Errorf("etcd %s exited: %s", s.Addr(), log)
		default:
		}
		err := s.health()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd %s not healthy after %v: %v; log: %s", s.Addr(), startTimeout, err, s.LogTail())
		}
		time.Sleep(pollEvery) // polling an external process for readiness
	}
}

var probeClient = &http.Client{Timeout: time.Second}

func (s *Server) health() error {
	resp, err := probeClient.Get(s.clientURL() + "/health")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if !strings.Contains(string(b), `"health":"true"`) {
		return fmt.Errorf("health: %s", b)
	}
	return nil
}

// isLeader asks the member's metrics whether it is the leader.
func (s *Server) isLeader() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.clientURL()+"/metrics", nil)
	resp, err := probeClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, "etcd_server_is_leader ") {
			return strings.TrimSpace(strings.TrimPrefix(line, "etcd_server_is_leader ")) == "1"
		}
	}
	return false
}

// Kill sends SIGKILL to the member (a crash) and waits for it to exit. It
// is a no-op when the member is not running.
func (s *Server) Kill() { s.proc.Kill() }

// Restart starts the member again on the same ports and data directory
// after Kill (it fails the test while the member still runs), and waits
// until it is healthy (which, in a cluster, needs a quorum of members
// running).
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.launch(); err != nil {
		s.t.Fatalf("etcdtest: restart %s: %v", s.Addr(), err)
	}
	if err := s.waitHealthy(); err != nil {
		s.t.Fatalf("etcdtest: restart %s: %v", s.Addr(), err)
	}
}

// Stop freezes the member with SIGSTOP: connections stay open but nothing
// is answered until Cont.
func (s *Server) Stop() { s.signal(syscall.SIGSTOP) }

// Cont resumes a member frozen by Stop (SIGCONT).
func (s *Server) Cont() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	if err := s.proc.Signal(sig); err != nil {
		s.t.Errorf("etcdtest: signal %v to %s: %v", sig, s.Addr(), err)
	}
}

// LogTail returns the end of the member's log.
func (s *Server) LogTail() string {
	b, _ := os.ReadFile(s.logPath())
	const tailBytes = 2000
	if len(b) > tailBytes {
		b = b[len(b)-tailBytes:]
	}
	return string(b)
}

func (s *Server) cleanup() {
	s.proc.Kill()
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}
