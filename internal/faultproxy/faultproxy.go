// Package faultproxy is a TCP fault-injection proxy for tests. A Proxy
// listens on a free loopback port and forwards every connection to an
// upstream address. Its mode can be switched at run time:
//
//   - Pass: forward bytes as they come (optionally delayed per direction, see Delay).
//   - Blackhole: accept connections but never forward or answer: bytes read
//     from either side are dropped, connections stay open. Connections
//     accepted while blackholed are never connected upstream.
//   - Reset: close every connection (with a TCP RST) and refuse new ones
//     (they are accepted and reset at once).
//
// Switching back to Pass affects the connections still open: those that
// lost no byte meanwhile forward again; those that lost bytes are reset
// (TCP RST), as a real connection whose peer gave up on its retransmissions
// would be. A connection that lost bytes in the middle of its stream and
// went on would hand the peer a corrupted stream, which no real network
// does (TCP delivers every byte in order or the connection dies): an
// HTTP/2 server once decoded a LeaseTimeToLive request on such a
// connection as a LeaseRevoke, its header compression state having lost
// the dropped frames. Close stops every goroutine the Proxy started.
package faultproxy

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Mode is what a Proxy does with connections.
type Mode int

// Modes of a Proxy.
const (
	Pass Mode = iota
	Blackhole
	Reset
)

// String names the mode.
func (m Mode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Blackhole:
		return "blackhole"
	case Reset:
		return "reset"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Direction of a byte stream through the Proxy.
type Direction int

// Directions: Up is client → upstream, Down is upstream → client.
const (
	Up Direction = iota
	Down
)

// Stats counts what a Proxy did.
type Stats struct {
	Accepted int   // connections accepted
	Refused  int   // connections reset at once (Reset mode, or upstream unreachable)
	Open     int   // connections open now
	BytesUp  int64 // bytes forwarded client → upstream
	BytesDn  int64 // bytes forwarded upstream → client
	Dropped  int64 // bytes dropped by Blackhole
}

// Proxy is a TCP proxy with switchable faults. It is safe for concurrent use.
type Proxy struct {
	ln       net.Listener
	upstream string
	dialer   net.Dialer

	mu     sync.Mutex
	mode   Mode
	delay  [2]time.Duration
	links  map[*link]struct{}
	closed bool
	stats  Stats

	wg sync.WaitGroup
}

// New starts a Proxy on 127.0.0.1 (a free port) forwarding to upstream.
func New(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		ln:       ln,
		upstream: upstream,
		dialer:   net.Dialer{Timeout: time.Second},
		links:    make(map[*link]struct{}),
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Start is New for tests: it fails t on error and closes the Proxy when the
// test ends.
func Start(t testing.TB, upstream string) *Proxy {
	t.Helper()
	p, err := New(upstream)
	if err != nil {
		t.Fatalf("faultproxy: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// Addr is the address clients connect to ("127.0.0.1:port").
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Upstream is the address the Proxy forwards to.
func (p *Proxy) Upstream() string { return p.upstream }

// Mode returns the current mode.
func (p *Proxy) Mode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// Stats returns counters of what the Proxy did so far.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Open = len(p.links)
	return s
}

// Pass forwards bytes again, without delay.
func (p *Proxy) Pass() { p.set(Pass, 0, 0) }

// Delay forwards bytes, each chunk delayed by up (client → upstream) and down
// (upstream → client). Order is kept. The delay of a chunk is the one in
// force when the Proxy read it.
func (p *Proxy) Delay(up, down time.Duration) { p.set(Pass, max(up, 0), max(down, 0)) }

// Blackhole drops every byte in both directions and answers nothing; open
// connections stay open, new ones are accepted and never connected upstream.
func (p *Proxy) Blackhole() { p.set(Blackhole, 0, 0) }

// Reset closes every open connection with a TCP RST and resets new ones at
// once, until the mode changes.
func (p *Proxy) Reset() { p.set(Reset, 0, 0) }

// Set switches to mode (with no delay).
func (p *Proxy) Set(mode Mode) { p.set(mode, 0, 0) }

func (p *Proxy) set(mode Mode, up, down time.Duration) {
	p.mu.Lock()
	p.mode = mode
	p.delay = [2]time.Duration{up, down}
	var doomed []*link
	for l := range p.links {
		if mode == Reset || (mode == Pass && l.damaged.Load()) {
			doomed = append(doomed, l)
		}
	}
	p.mu.Unlock()
	for _, l := range doomed {
		l.close(true)
	}
}

// Close stops accepting, closes every connection and waits until every
// goroutine of the Proxy has returned. It is idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	var all []*link
	for l := range p.links {
		all = append(all, l)
	}
	p.mu.Unlock()
	err := p.ln.Close()
	for _, l := range all {
		l.close(false)
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			abort(c)
			return
		}
		p.stats.Accepted++
		mode := p.mode
		if mode == Reset {
			p.stats.Refused++
			p.mu.Unlock()
			abort(c)
			continue
		}
		l := &link{p: p, client: c, done: make(chan struct{})}
		p.links[l] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go l.start(mode == Blackhole)
	}
}

// abort closes c with a TCP RST rather than a FIN.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// dropping reports whether bytes are dropped now.
func (p *Proxy) dropping() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode != Pass
}

func (p *Proxy) delayOf(d Direction) (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delay[d], p.mode != Pass
}

func (p *Proxy) count(d Direction, n int, dropped bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case dropped:
		p.stats.Dropped += int64(n)
	case d == Up:
		p.stats.BytesUp += int64(n)
	default:
		p.stats.BytesDn += int64(n)
	}
}

// link is one proxied connection.
type link struct {
	p      *Proxy
	client net.Conn
	server net.Conn // nil when never connected upstream

	mu       sync.Mutex
	isClosed bool
	done     chan struct{}
	// damaged: bytes of this connection were dropped; it never forwards
	// again, and is reset when the Proxy passes again.
	damaged atomic.Bool
}

func (l *link) close(rst bool) {
	l.mu.Lock()
	if l.isClosed {
		l.mu.Unlock()
		return
	}
	l.isClosed = true
	close(l.done)
	server := l.server
	l.mu.Unlock()
	for _, c := range []net.Conn{l.client, server} {
		if c == nil {
			continue
		}
		if rst {
			abort(c)
		} else {
			_ = c.Close()
		}
	}
	l.p.mu.Lock()
	delete(l.p.links, l)
	l.p.mu.Unlock()
}

// start runs the link until either side closes. It owns one wg count.
func (l *link) start(blackholed bool) {
	defer l.p.wg.Done()
	if blackholed {
		// Never connected upstream: drain and drop until closed.
		buf := make([]byte, 32<<10)
		for {
			n, err := l.client.Read(buf)
			if n > 0 {
				l.damaged.Store(true)
				l.p.count(Up, n, true)
			}
			if err != nil {
				l.close(false)
				return
			}
		}
	}
	server, err := l.p.dialer.Dial("tcp", l.p.upstream)
	if err != nil {
		l.p.mu.Lock()
		l.p.stats.Refused++
		l.p.mu.Unlock()
		l.close(true)
		return
	}
	l.mu.Lock()
	if l.isClosed {
		l.mu.Unlock()
		abort(server)
		return
	}
	l.server = server
	l.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.pump(l.client, server, Up) }()
	go func() { defer wg.Done(); l.pump(server, l.client, Down) }()
	wg.Wait()
}

type chunk struct {
	data []byte
	due  time.Time
}

// pump copies src to dst through a queue, so that delays keep order without
// blocking reads. It returns when the link is closed.
func (l *link) pump(src, dst net.Conn, dir Direction) {
	q := make(chan chunk, 256)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // writer
		defer wg.Done()
		timer := time.NewTimer(time.Hour)
		timer.Stop()
		defer timer.Stop()
		for {
			var c chunk
			var ok bool
			select {
			case c, ok = <-q:
				if !ok { // the reader saw EOF: everything queued is written
					l.close(false)
					return
				}
			case <-l.done:
				return
			}
			if wait := time.Until(c.due); wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-l.done:
					return
				}
			}
			if l.p.dropping() {
				l.damaged.Store(true)
				l.p.count(dir, len(c.data), true)
				continue
			}
			if l.damaged.Load() {
				l.close(true) // the stream has a hole: the connection dies
				return
			}
			if _, err := dst.Write(c.data); err != nil {
				l.close(false)
				return
			}
			l.p.count(dir, len(c.data), false)
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			d, drop := l.p.delayOf(dir)
			if drop {
				l.damaged.Store(true)
				l.p.count(dir, n, true)
			} else {
				c := chunk{data: append([]byte(nil), buf[:n]...), due: time.Now().Add(d)}
				select {
				case q <- c:
				case <-l.done:
				}
			}
		}
		if err != nil {
			// EOF or error: the writer flushes what is queued, then closes.
			close(q)
			break
		}
	}
	wg.Wait()
}
