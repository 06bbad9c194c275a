// Package pgtest starts throwaway PostgreSQL servers for tests.
//
// Every server gets its own data directory (initdb, trust authentication)
// in a temporary directory, listens on a free loopback port (never 5432) and
// on a unix socket in that directory, and runs with fsync off (a killed
// server keeps every commit: the kernel's page cache survives it; only a
// crash of the machine would lose data). It is stopped and its directory
// removed when the test ends (t.Cleanup).
//
// initdb and postgres refuse to run as root: when the test runs as root,
// they run as the operating system user "postgres" (which the Debian
// packages create), in a directory owned by that user.
//
// The server binaries are looked for in `pg_config --bindir`, then in
// /usr/lib/postgresql/*/bin (newest first), then on PATH. When they are
// missing the test is skipped, unless the environment asks for PostgreSQL
// (CTXLOCK_REQUIRE_POSTGRES=1 or CI=true), in which case it fails.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ctxlock/ctxlock/internal/testport"
	"github.com/ctxlock/ctxlock/internal/testproc"
)

// Timeouts for waiting on the external processes.
const (
	startTimeout = 30 * time.Second
	stopTimeout  = 10 * time.Second
	pollEvery    = 10 * time.Millisecond
)

// Superuser is the name of the database superuser of every server.
const Superuser = "postgres"

// Require makes the availability decision: it returns the directory of the
// PostgreSQL server binaries (initdb, postgres), skips the test when they
// are missing, or fails it when CTXLOCK_REQUIRE_POSTGRES=1 or CI=true.
func Require(t testing.TB) string {
	t.Helper()
	if dir := BinDir(); dir != "" {
		return dir
	}
	const install = "install the PostgreSQL server (apt-get install -y postgresql)"
	if os.Getenv("CTXLOCK_REQUIRE_POSTGRES") == "1" || os.Getenv("CI") == "true" {
		t.Fatalf("PostgreSQL server binaries (initdb, postgres) not found but required (CTXLOCK_REQUIRE_POSTGRES=1 or CI=true): %s", install)
	}
	t.Skipf("PostgreSQL server binaries (initdb, postgres) not found; %s or set CTXLOCK_REQUIRE_POSTGRES=1 to fail", install)
	return ""
}

// BinDir returns the directory that holds initdb and postgres, or "" when
// none is found.
func BinDir() string {
	var candidates []string
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	globbed, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(globbed, func(i, j int) bool { return version(globbed[i]) > version(globbed[j]) })
	candidates = append(candidates, globbed...)
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		candidates = append(candidates, filepath.Dir(p))
	}
	for _, dir := range candidates {
		if isExec(filepath.Join(dir, "initdb")) && isExec(filepath.Join(dir, "postgres")) {
			return dir
		}
	}
	return ""
}

// version returns the major version in /usr/lib/postgresql/<v>/bin.
func version(dir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return v
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// Server is one PostgreSQL server (a postmaster and its backends).
type Server struct {
	t    testing.TB
	bin  string
	dir  string // temporary directory: data/, the socket, the log
	port int
	cred *syscall.Credential // nil unless the test runs as root

	proc testproc.Proc // the postmaster
}

// Start initialises a data directory, starts a server on a free loopback
// port and waits until it accepts connections. It is stopped when the test
// ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Require(t)
	s := &Server{t: t, bin: bin}
	t.Cleanup(s.cleanup) // also removes the directory of a failed prepare
	if err := s.prepare(); err != nil {
		t.Fatalf("pgtest: %v; log: %s", err, s.LogTail())
	}
	var lastErr error
	for range 8 {
		port, err := testport.Free()
		if err != nil {
			t.Fatalf("pgtest: no free port: %v", err)
		}
		s.port = port
		lastErr = s.start()
		if lastErr == nil {
			return s
		}
		if !errors.Is(lastErr, errBind) {
			break
		}
	}
	t.Fatalf("pgtest: start postgres: %v", lastErr)
	return nil
}

// prepare makes the temporary directory (owned by the postgres user when
// running as root) and runs initdb in it.
func (s *Server) prepare() error {
	// Not t.TempDir: its parent directories are private to the test's
	// user, and the postgres user must be able to reach this one.
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return err
	}
	s.dir = dir
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("running as root, and initdb refuses root: need the user postgres to run it as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return err
		}
	}
	cmd := exec.Command(filepath.Join(s.bin, "initdb"),
		"-D", s.dataDir(), "-U", Superuser, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.SysProcAttr = s.procAttr()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v: %s", err, tail(string(out)))
	}
	return nil
}

func (s *Server) dataDir() string { return filepath.Join(s.dir, "data") }
func (s *Server) logPath() string { return filepath.Join(s.dir, "postgres.log") }

var errBind = errors.New("address in use")

// start launches the postmaster and waits until it accepts connections.
func (s *Server) start() error {
	logf, err := os.OpenFile(s.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(filepath.Join(s.bin, "postgres"),
		"-D", s.dataDir(),
		"-p", strconv.Itoa(s.port),
		"-k", s.dir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off",
		"-c", "full_page_writes=off",
		"-c", "max_connections=200",
		"-c", "logging_collector=off",
	)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = s.procAttr()
	exited, err := s.proc.Start(cmd)
	if err != nil {
		return err
	}

	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-exited:
			log := s.LogTail()
			if strings.Contains(log, "Address already in use") || strings.Contains(log, "could not bind") {
				return fmt.Errorf("%w: port %d: %s", errBind, s.port, log)
			}
			return fmt.Errorf("postgres on port %d exited: %s", s.port, log)
		default:
		}
		err := s.probe()
		if err == nil {
			return nil
		}
		if errors.Is(err, errBind) {
			s.Kill()
			return err
		}
		if time.Now().After(deadline) {
			s.Kill()
			return fmt.Errorf("postgres on port %d not accepting connections after %v: %v; log: %s",
				s.port, startTimeout, err, s.LogTail())
		}
		time.Sleep(pollEvery) // polling an external process for readiness
	}
}

// probe connects and checks that the server answering the port is this
// one (its data directory), not another process that took the port.
func (s *Server) probe() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.DSN()+" connect_timeout=1")
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	var dataDir string
	if err := c.QueryRow(ctx, "SHOW data_directory").Scan(&dataDir); err != nil {
		return err
	}
	if filepath.Clean(dataDir) != s.dataDir() {
		return fmt.Errorf("%w: port %d is answered by the server of %s, not of %s", errBind, s.port, dataDir, s.dataDir())
	}
	return nil
}

// procAttr puts the server in its own process group and runs it as the
// postgres user when the test runs as root (testproc has the kernel kill
// the postmaster when the test binary dies without running its cleanups).
func (s *Server) procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: s.cred}
}

// DSN returns a key=value connection string for the superuser over TCP.
func (s *Server) DSN() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=postgres sslmode=disable", s.port, Superuser)
}

// Addr returns "127.0.0.1:port".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port returns the server's TCP port.
func (s *Server) Port() int { return s.port }

// Pool returns a pgxpool.Pool on the server, closed when the test ends.
// opts may adjust its configuration first.
func (s *Server) Pool(t testing.TB, opts ...func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(s.DSN() + " connect_timeout=2")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	cfg.MaxConns = 16
	for _, f := range opts {
		f(cfg)
	}
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("pgtest: pool: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// Kill sends SIGKILL to the server and all its child processes (a crash) and waits
// for the postmaster to exit. It is a no-op when the server is not running.
func (s *Server) Kill() {
	pid, exited, ok := s.proc.Running()
	if !ok {
		return
	}
	// Freeze the postmaster first so that it forks no more backends, then
	// kill the backends (each is its own process group leader: setsid) and
	// the postmaster.
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	for _, c := range children(pid) {
		_ = syscall.Kill(c, syscall.SIGKILL)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	<-exited
}

// children returns the process ids whose parent is pid (from /proc).
func children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at ')'.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) >= 2 && f[1] == strconv.Itoa(pid) {
			out = append(out, n)
		}
	}
	return out
}

// Restart starts the server again on the same port and data directory
// after Kill, and waits until it accepts connections (crash recovery
// included). Backends of the killed server that are still exiting make the
// first attempts fail; Restart retries until startTimeout.
func (s *Server) Restart() {
	s.t.Helper()
	if _, _, running := s.proc.Running(); running {
		s.t.Fatalf("pgtest: Restart of %s while it is still running (Kill it first)", s.Addr())
	}
	deadline := time.Now().Add(startTimeout)
	for {
		err := s.start()
		if err == nil {
			return
		}
		if time.Now().After(deadline) || errors.Is(err, errBind) {
			s.t.Fatalf("pgtest: restart %s: %v", s.Addr(), err)
		}
		time.Sleep(50 * time.Millisecond) // waiting for the old backends to exit
	}
}

// Stop freezes the server and its child processes with SIGSTOP: connections stay
// open but nothing is answered until Cont.
func (s *Server) Stop() { s.signal(syscall.SIGSTOP, true) }

// Cont resumes a server frozen by Stop (SIGCONT).
func (s *Server) Cont() { s.signal(syscall.SIGCONT, false) }

func (s *Server) signal(sig syscall.Signal, stopped bool) {
	pid, _, ok := s.proc.Running()
	if !ok {
		return
	}
	if stopped {
		// The postmaster first, so that it forks no more backends.
		if err := s.proc.Signal(sig); err != nil {
			s.t.Errorf("pgtest: signal %v to %s: %v", sig, s.Addr(), err)
			return
		}
	}
	for _, c := range children(pid) {
		_ = syscall.Kill(c, sig)
	}
	if !stopped {
		if err := s.proc.Signal(sig); err != nil {
			s.t.Errorf("pgtest: signal %v to %s: %v", sig, s.Addr(), err)
		}
	}
}

// cleanup stops the server (fast shutdown, then SIGKILL) and removes its
// directory.
func (s *Server) cleanup() {
	s.shutdown()
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

func (s *Server) shutdown() {
	pid, exited, ok := s.proc.Running()
	if !ok {
		return
	}
	for _, c := range children(pid) {
		_ = syscall.Kill(c, syscall.SIGCONT)
	}
	_ = syscall.Kill(pid, syscall.SIGCONT)
	_ = syscall.Kill(pid, syscall.SIGINT) // fast shutdown: disconnects clients
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-exited:
	case <-timer.C:
		s.Kill()
	}
}

// LogTail returns the end of the server's log.
func (s *Server) LogTail() string {
	b, _ := os.ReadFile(s.logPath())
	return tail(string(b))
}

func tail(s string) string {
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return strings.TrimSpace(s)
}
