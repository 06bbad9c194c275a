package main

import (
	"context"
	"crypto/tls"
	"net"
	"sync/atomic"
	"time"
)

// cmdCounter counts the Redis commands clients send, by parsing the RESP
// request stream each connection writes (every request is an array of bulk
// strings). It sees everything a client sends: commands, pipelines,
// SUBSCRIBE/UNSUBSCRIBE on pub/sub connections, health-check PINGs.
type cmdCounter struct {
	cmds   atomic.Int64
	writes atomic.Int64 // Write calls (flushes): an upper bound on round trips
	rts    atomic.Int64 // round trips seen by go-redis hooks (commands + pipelines)
}

func (c *cmdCounter) load() (cmds, rts int64) { return c.cmds.Load(), c.rts.Load() }

// dial is a go-redis Options.Dialer.
func (c *cmdCounter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil || c == nil {
		return conn, err
	}
	return &countingConn{Conn: conn, c: c}, nil
}

// dialRueidis is a rueidis ClientOption.DialCtxFn.
func (c *cmdCounter) dialRueidis(ctx context.Context, addr string, d *net.Dialer, _ *tls.Config) (net.Conn, error) {
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil || c == nil {
		return conn, err
	}
	return &countingConn{Conn: conn, c: c}, nil
}

type countingConn struct {
	net.Conn
	c *cmdCounter
	p respParser
}

func (cc *countingConn) Write(b []byte) (int, error) {
	n, err := cc.Conn.Write(b)
	if n > 0 {
		cc.c.writes.Add(1)
		if k := cc.p.feed(b[:n]); k > 0 {
			cc.c.cmds.Add(int64(k))
		}
	}
	return n, err
}

// respParser is a streaming parser of RESP requests that counts complete
// commands. Inline commands (a line not starting with '*') count as one.
type respParser struct {
	state int   // 0 start of request, 1 array header, 2 bulk header, 3 bulk data, 4 inline
	num   int64 // digits being read
	elems int64 // bulk strings left in the current request
	skip  int64 // bulk bytes (+CRLF) left to skip
}

func (p *respParser) feed(b []byte) int {
	n := 0
	for i := 0; i < len(b); i++ {
		ch := b[i]
		switch p.state {
		case 0:
			switch ch {
			case '*':
				p.state, p.num = 1, 0
			case '\r', '\n':
			default:
				p.state = 4
			}
		case 1, 2:
			switch {
			case ch >= '0' && ch <= '9':
				p.num = p.num*10 + int64(ch-'0')
			case ch == '\n':
				if p.state == 1 {
					p.elems = p.num
					if p.elems <= 0 {
						n++
						p.state = 0
					} else {
						p.state = 5
					}
				} else {
					p.skip = p.num + 2
					p.state = 3
				}
			}
		case 5: // expecting '$'
			if ch == '$' {
				p.state, p.num = 2, 0
			}
		case 3:
			take := min(p.skip, int64(len(b)-i))
			p.skip -= take
			i += int(take) - 1
			if p.skip == 0 {
				p.elems--
				if p.elems == 0 {
					n++
					p.state = 0
				} else {
					p.state = 5
				}
			}
		case 4:
			if ch == '\n' {
				n++
				p.state = 0
			}
		}
	}
	return n
}
