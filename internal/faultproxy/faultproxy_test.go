package faultproxy_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ctxlock/ctxlock/internal/faultproxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer echoes every line back; it stops when the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg+"\n" and reads a line back within timeout.
func roundTrip(c net.Conn, msg string, timeout time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return line[:len(line)-1], nil
}

func mustEcho(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	got, err := roundTrip(c, msg, 5*time.Second)
	if err != nil || got != msg {
		t.Fatalf("round trip %q: got %q, %v", msg, got, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

func TestPass(t *testing.T) {
	p := faultproxy.Start(t, echoServer(t))
	c := dial(t, p.Addr())
	for _, m := range []string{"a", "hello", "third"} {
		mustEcho(t, c, m)
	}
	if s := p.Stats(); s.Accepted != 1 || s.Open != 1 || s.BytesUp == 0 || s.BytesDn == 0 {
		t.Fatalf("stats %+v", s)
	}
	if p.Mode() != faultproxy.Pass || p.Upstream() == "" {
		t.Fatalf("mode %v upstream %q", p.Mode(), p.Upstream())
	}
}

func TestDelayPerDirection(t *testing.T) {
	p := faultproxy.Start(t, echoServer(t))
	c := dial(t, p.Addr())
	mustEcho(t, c, "warm")
	for _, tc := range []struct{ up, down time.Duration }{
		{100 * time.Millisecond, 0},
		{0, 100 * time.Millisecond},
		{60 * time.Millisecond, 60 * time.Millisecond},
	} {
		p.Delay(tc.up, tc.down)
		start := time.Now()
		mustEcho(t, c, "x")
		if el := time.Since(start); el < tc.up+tc.down {
			t.Errorf("delay up %v down %v: round trip took %v", tc.up, tc.down, el)
		}
	}
	p.Pass()
	start := time.Now()
	mustEcho(t, c, "fast")
	t.Logf("round trip after Pass: %v", time.Since(start))
}

func TestDelayKeepsOrder(t *testing.T) {
	p := faultproxy.Start(t, echoServer(t))
	c := dial(t, p.Addr())
	p.Delay(20*time.Millisecond, 5*time.Millisecond)
	r := bufio.NewReader(c)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	const n = 50
	for i := 0; i < n; i++ {
		if _, err := c.Write([]byte{byte('A' + i%26), '\n'}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line[0] != byte('A'+i%26) {
			t.Fatalf("line %d = %q: order lost", i, line)
		}
	}
}

func TestBlackhole(t *testing.T) {
	p := faultproxy.Start(t, echoServer(t))
	c := dial(t, p.Addr())
	mustEcho(t, c, "before")
	p.Blackhole()
	if _, err := roundTrip(c, "lost", 200*time.Millisecond); !isTimeout(err) {
		t.Fatalf("blackholed round trip: %v; want a timeout (connection open, no answer)", err)
	}
	// New connections are accepted but never answered.
	c2 := dial(t, p.Addr())
	if _, err := roundTrip(c2, "new", 200*time.Millisecond); !isTimeout(err) {
		t.Fatalf("new connection while blackholed: %v; want a timeout", err)
	}
	if s := p.Stats(); s.Dropped == 0 {
		t.Fatalf("nothing dropped: %+v", s)
	}
	// Back to pass: the connections that lost bytes are reset (their stream
	// has a hole, so they may not go on); new ones work.
	p.Pass()
	if _, err := roundTrip(c, "after", 2*time.Second); err == nil || isTimeout(err) {
		t.Fatalf("round trip on a connection that lost bytes: %v; want a connection error", err)
	}
	c3 := dial(t, p.Addr())
	mustEcho(t, c3, "fresh")
}

// A connection that sent nothing while the Proxy was blackholed lost no
// byte: it forwards again once the Proxy passes.
func TestBlackholeKeepsIdleConnection(t *testing.T) {
	p := faultproxy.Start(t, echoServer(t))
	c := dial(t, p.Addr())
	mustEcho(t, c, "before")
	p.Blackhole()
	p.Pass()
	mustEcho(t, c, "after")
}

func TestReset(t *testing.T) {
	p := faultproxy.Start(t, echoServer(t))
	c := dial(t, p.Addr())
	mustEcho(t, c, "before")
	p.Reset()
	if _, err := roundTrip(c, "x", 2*time.Second); err == nil || isTimeout(err) {
		t.Fatalf("round trip on a reset connection: %v; want a connection error", err)
	}
	// New connections are refused (accepted, then reset).
	// The reset may come before the dial completes: that is the error we want too.
	if c2, err := net.Dial("tcp", p.Addr()); err == nil {
		t.Cleanup(func() { c2.Close() })
		if _, err := roundTrip(c2, "x", 2*time.Second); err == nil || isTimeout(err) {
			t.Fatalf("round trip on a new connection in reset mode: %v; want a connection error", err)
		}
	}
	if s := p.Stats(); s.Refused == 0 || s.Open != 0 {
		t.Fatalf("stats %+v", s)
	}
	p.Pass()
	mustEcho(t, dial(t, p.Addr()), "again")
}

func TestUpstreamDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := faultproxy.Start(t, addr)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		return // the proxy reset the connection before the dial completed: the error we want
	}
	t.Cleanup(func() { c.Close() })
	if _, err := roundTrip(c, "x", 2*time.Second); err == nil || isTimeout(err) {
		t.Fatalf("round trip with the upstream down: %v; want a connection error", err)
	}
}

func TestCloseStopsEverything(t *testing.T) {
	p, err := faultproxy.New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	var cs []net.Conn
	for i := 0; i < 3; i++ {
		c := dial(t, p.Addr())
		mustEcho(t, c, "x")
		cs = append(cs, c)
	}
	p.Delay(time.Hour, time.Hour) // a chunk waiting on its delay must not block Close
	_, _ = cs[0].Write([]byte("stuck\n"))
	p.Blackhole()
	cs = append(cs, dial(t, p.Addr())) // a blackholed link
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, c := range cs {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("read after Close: %v; want EOF or reset", err)
		}
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), 200*time.Millisecond); err == nil {
		t.Fatal("dial after Close succeeded")
	}
	// goleak (TestMain) checks that no goroutine survived.
}

func TestModeString(t *testing.T) {
	for m, want := range map[faultproxy.Mode]string{faultproxy.Pass: "pass", faultproxy.Blackhole: "blackhole", faultproxy.Reset: "reset", 9: "Mode(9)"} {
		if m.String() != want {
			t.Errorf("%d: %q", int(m), m.String())
		}
	}
}
