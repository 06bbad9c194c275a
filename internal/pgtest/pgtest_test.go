package pgtest_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ctxlock/ctxlock/internal/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func query(t *testing.T, s *pgtest.Server) int {
	t.Helper()
	p := s.Pool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n int
	if err := p.QueryRow(ctx, "SELECT 1 + 1").Scan(&n); err != nil {
		t.Fatalf("query: %v", err)
	}
	return n
}

func TestStartQuery(t *testing.T) {
	s := pgtest.Start(t)
	if n := query(t, s); n != 2 {
		t.Fatalf("SELECT 1 + 1 = %d", n)
	}
}

// TestKillRestartKeepsData: a row written before a SIGKILL is there after
// Restart (same data directory and port).
func TestKillRestartKeepsData(t *testing.T) {
	s := pgtest.Start(t)
	p := s.Pool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := p.Exec(ctx, "CREATE TABLE t (v int); INSERT INTO t VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	s.Kill()
	if err := p.Ping(ctx); err == nil {
		t.Fatal("Ping succeeded against a killed server")
	}
	s.Restart()
	var v int
	if err := p.QueryRow(ctx, "SELECT v FROM t").Scan(&v); err != nil || v != 42 {
		t.Fatalf("after restart: %v, %d; want nil, 42", err, v)
	}
}

// TestStopCont: a frozen server does not answer; after Cont it does.
func TestStopCont(t *testing.T) {
	s := pgtest.Start(t)
	p := s.Pool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	err := p.Ping(short)
	cancelShort()
	s.Cont()
	if err == nil {
		t.Fatal("Ping answered by a frozen server")
	}
	if err := p.Ping(ctx); err != nil {
		t.Fatalf("after Cont: %v", err)
	}
}

func TestTwoServersIndependent(t *testing.T) {
	a, b := pgtest.Start(t), pgtest.Start(t)
	if a.Port() == b.Port() {
		t.Fatalf("both on port %d", a.Port())
	}
	query(t, a)
	query(t, b)
}
