// Package redistest starts throwaway redis-server processes for tests: a
// single server, a Redis Cluster, N independent servers (for Redlock), or a
// master with replicas watched by Sentinel.
//
// Every server listens on a free loopback port (never 6379), keeps nothing on
// disk (--save "" --appendonly no) and runs in its own temporary directory.
// Servers are stopped when the test ends (t.Cleanup).
//
// When redis-server is not on PATH the test is skipped, unless the
// environment asks for Redis (CTXLOCK_REQUIRE_REDIS=1 or CI=true), in which
// case it fails.
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock/internal/testport"
	"github.com/ctxlock/ctxlock/internal/testproc"
)

// ServerBinary is the name of the executable looked up on PATH.
const ServerBinary = "redis-server"

// Timeouts for waiting on the external processes.
const (
	startTimeout = 10 * time.Second
	stopTimeout  = 5 * time.Second
	pollEvery    = 5 * time.Millisecond
)

// Option configures a server started by StartServer, StartNodes or StartCluster.
type Option func(*config)

type config struct {
	args []string
	// monitor: the process is a Sentinel (redis-server --sentinel)
	// watching this master.
	monitor *monitored
}

// monitored is the master a Sentinel process watches.
type monitored struct {
	name   string
	addr   string
	quorum int
}

// WithArgs passes extra command-line arguments to redis-server, for instance
// WithArgs("--notify-keyspace-events", "Ex").
func WithArgs(args ...string) Option {
	return func(c *config) { c.args = append(c.args, args...) }
}

// Require makes the availability decision: it returns the path of
// redis-server, skips the test when it is missing, or fails the test when
// CTXLOCK_REQUIRE_REDIS=1 or CI=true.
func Require(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath(ServerBinary)
	if err == nil {
		return path
	}
	if os.Getenv("CTXLOCK_REQUIRE_REDIS") == "1" || os.Getenv("CI") == "true" {
		t.Fatalf("redis-server not found on PATH but required (CTXLOCK_REQUIRE_REDIS=1 or CI=true): install redis-server (apt-get install -y redis-server)")
	}
	t.Skip("redis-server not found; install redis-server (apt-get install -y redis-server) or set CTXLOCK_REQUIRE_REDIS=1 to fail")
	return ""
}

// Server is one redis-server process.
type Server struct {
	t       testing.TB
	bin     string
	dir     string
	port    int
	busPort int // cluster bus port, 0 when not a cluster node
	args    []string

	proc testproc.Proc
}

// StartServer starts a standalone redis-server on a free loopback port and
// waits until it answers PING. It is stopped when the test ends.
func StartServer(t testing.TB, opts ...Option) *Server {
	t.Helper()
	return startServer(t, false, opts)
}

// StartNodes starts n independent standalone servers (for Redlock).
func StartNodes(t testing.TB, n int, opts ...Option) []*Server {
	t.Helper()
	servers := make([]*Server, n)
	for i := range servers {
		servers[i] = startServer(t, false, opts)
	}
	return servers
}

func startServer(t testing.TB, cluster bool, opts []Option) *Server {
	t.Helper()
	bin := Require(t)
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir()}
	t.Cleanup(s.shutdown)
	var lastErr error
	for attempt := 0; attempt < 8; attempt++ {
		port, err := testport.Free()
		if err != nil {
			t.Fatalf("redistest: no free port: %v", err)
		}
		s.port, s.busPort = port, 0
		if cluster {
			if s.busPort, err = testport.Free(); err != nil {
				t.Fatalf("redistest: no free port: %v", err)
			}
		}
		if cfg.monitor != nil {
			s.args, err = s.sentinelArgs(cfg.monitor, cfg.args)
			if err != nil {
				t.Fatalf("redistest: sentinel config: %v", err)
			}
		} else {
			s.args = s.buildArgs(cluster, cfg.args)
		}
		lastErr = s.start()
		if lastErr == nil {
			return s
		}
		if !errors.Is(lastErr, errBind) {
			break
		}
	}
	t.Fatalf("redistest: start redis-server: %v", lastErr)
	return nil
}

func (s *Server) buildArgs(cluster bool, extra []string) []string {
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--logfile", filepath.Join(s.dir, "redis.log"),
		"--loglevel", "notice",
	}
	if cluster {
		args = append(args,
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(s.dir, "nodes.conf"),
			"--cluster-node-timeout", "1000",
			"--cluster-port", strconv.Itoa(s.busPort),
			"--cluster-require-full-coverage", "yes",
		)
	}
	return append(args, extra...)
}

var errBind = errors.New("address in use")

// start launches the process and waits until it answers PING.
func (s *Server) start() error {
	cmd := exec.Command(s.bin, s.args...)
	cmd.Dir = s.dir
	exited, err := s.proc.Start(cmd)
	if err != nil {
		return err
	}

	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-exited:
			log := s.logTail()
			if strings.Contains(log, "Address already in use") {
				return fmt.Errorf("%w: port %d: %s", errBind, s.port, log)
			}
			return fmt.Errorf("redis-server on port %d exited: %s", s.port, log)
		default:
		}
		if pid, err := ping(s.Addr()); err == nil {
			if pid != cmd.Process.Pid {
				// Another process took the port (a test of another
				// package, or any listener the kernel gave it to while
				// this server was down for a Restart): this server
				// cannot bind it, and a test must not go on against
				// the other one as if it were this.
				s.Kill()
				return fmt.Errorf("%w: port %d is answered by process %d, not by this redis-server (%d)",
					errBind, s.port, pid, cmd.Process.Pid)
			}
			return nil
		} else if time.Now().After(deadline) {
			s.Kill()
			return fmt.Errorf("redis-server on port %d not answering PING after %v: %v; log: %s",
				s.port, startTimeout, err, s.logTail())
		}
		time.Sleep(pollEvery) // polling an external process for readiness
	}
}

// ping sends a raw PING, expects +PONG, then asks INFO server for the
// answering process's id.
func ping(addr string) (pid int, err error) {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return 0, err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return 0, fmt.Errorf("unexpected reply %q", strings.TrimSpace(line))
	}
	if _, err := c.Write([]byte("INFO server\r\n")); err != nil {
		return 0, err
	}
	line, err = r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "$")))
	if !strings.HasPrefix(line, "$") || err != nil || n < 0 {
		return 0, fmt.Errorf("unexpected INFO reply %q", strings.TrimSpace(line))
	}
	body := make([]byte, n+2)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("INFO server has no process_id")
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// Addr returns "127.0.0.1:port".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port returns the server's TCP port.
func (s *Server) Port() int { return s.port }

// BusPort returns the cluster bus port of a cluster node, 0 otherwise.
func (s *Server) BusPort() int { return s.busPort }

// Kill sends SIGKILL and waits for the process to exit. It is a no-op when
// the process is not running.
func (s *Server) Kill() { s.proc.Kill() }

// Restart starts the server again on the same port after Kill and waits
// until it answers PING. A cluster node keeps its identity (nodes.conf).
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("redistest: restart %s: %v", s.Addr(), err)
	}
}

// Stop freezes the process with SIGSTOP: connections stay open but nothing
// is answered until Cont.
func (s *Server) Stop() { s.signal(syscall.SIGSTOP) }

// Cont resumes a process frozen by Stop (SIGCONT).
func (s *Server) Cont() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	if err := s.proc.Signal(sig); err != nil {
		s.t.Errorf("redistest: signal %v to %s: %v", sig, s.Addr(), err)
	}
}

// shutdown stops the process: SIGCONT (if frozen), SIGTERM, then SIGKILL.
func (s *Server) shutdown() { s.proc.Shutdown(syscall.SIGTERM, stopTimeout) }

// ClientOptions returns go-redis options suitable for tests against addr:
// short timeouts, context deadlines honoured.
func ClientOptions(addr string) *redis.Options {
	return &redis.Options{
		Addr:                  addr,
		DialTimeout:           time.Second,
		ReadTimeout:           time.Second,
		WriteTimeout:          time.Second,
		ContextTimeoutEnabled: true,
		DialerRetries:         1,
		MaxRetries:            -1,
	}
}

// Client returns a go-redis client for s (see ClientOptions), closed when
// the test ends. opts may adjust the options before the client is made.
func (s *Server) Client(t testing.TB, opts ...func(*redis.Options)) *redis.Client {
	t.Helper()
	o := ClientOptions(s.Addr())
	for _, f := range opts {
		f(o)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// FlushAll empties the server.
func (s *Server) FlushAll(t testing.TB) {
	t.Helper()
	c := redis.NewClient(ClientOptions(s.Addr()))
	defer c.Close()
	if err := c.FlushAll(context.Background()).Err(); err != nil {
		t.Fatalf("redistest: FLUSHALL %s: %v", s.Addr(), err)
	}
}
