package goredis

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
)

// fuzzValue decodes fuzz bytes into a value shaped like what go-redis hands
// the backend for a script reply: nil, int64, string, []any (nested).
func fuzzValue(b []byte, depth int) (any, []byte) {
	if len(b) == 0 {
		return nil, b
	}
	tag, b := b[0]%5, b[1:]
	switch {
	case tag == 0 || depth > 3:
		return nil, b
	case tag == 1:
		var n int64
		if len(b) >= 8 {
			n, b = int64(binary.LittleEndian.Uint64(b)), b[8:]
		} else if len(b) > 0 {
			n, b = int64(int8(b[0])), b[1:]
		}
		return n, b
	case tag == 2:
		n := 0
		if len(b) > 0 {
			n, b = int(b[0])%16, b[1:]
		}
		n = min(n, len(b))
		return string(b[:n]), b[n:]
	case tag == 3:
		n := 0
		if len(b) > 0 {
			n, b = int(b[0])%4, b[1:]
		}
		arr := make([]any, n)
		for i := range arr {
			arr[i], b = fuzzValue(b, depth+1)
		}
		return arr, b
	default:
		return redis.Nil, b
	}
}

// FuzzParsePair checks the acquiring scripts' reply parser against its
// documented shape: {kind ∈ 0..3, integer} (for kind 2, a yield, the
// integer is 0 or 1: queued or not), or {0, integer, fence ≥ 0}; anything
// else is errGarbage.
func FuzzParsePair(f *testing.F) {
	f.Add([]byte{3, 2, 1, 1, 1, 7})                         // {1, 7}
	f.Add([]byte{3, 2, 1, 0, 1, 0xff})                      // {0, -1}
	f.Add([]byte{3, 3, 1, 0, 1, 5, 1, 9})                   // {0, 5, 9}
	f.Add([]byte{3, 3, 1, 1, 1, 5, 1, 9})                   // {1, 5, 9}: fence on a grant
	f.Add([]byte{3, 2, 1, 3, 1, 7})                         // {3, 7}
	f.Add([]byte{3, 2, 1, 2, 1, 1})                         // {2, 1}: yielded, queued
	f.Add([]byte{3, 2, 1, 2, 1, 2})                         // {2, 2}: bad yield
	f.Add([]byte{3, 2, 1, 4, 1, 7})                         // bad kind
	f.Add([]byte{3, 1, 1, 1})                               // short array
	f.Add([]byte{1, 1, 2, 3, 4, 5, 6, 7, 8})                // a bare integer
	f.Add([]byte{3, 2, 2, 1, 49, 1, 1})                     // {"1", 1}
	f.Add([]byte{3, 2, 3, 0, 1, 1})                         // nested
	f.Add([]byte{3, 2, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0x80}) // {1, MinInt64}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, _ := fuzzValue(data, 0)
		r, err := parseReply(v)
		arr, isArr := v.([]any)
		want := isArr && (len(arr) == 2 || len(arr) == 3)
		var kind, num, fence int64
		if want {
			var ok1, ok2 bool
			kind, ok1 = arr[0].(int64)
			num, ok2 = arr[1].(int64)
			want = ok1 && ok2 && kind >= 0 && kind <= 3 && (kind != 2 || num == 0 || num == 1)
			if want && len(arr) == 3 {
				var ok3 bool
				fence, ok3 = arr[2].(int64)
				want = ok3 && fence >= 0 && kind == 0
			}
		}
		if !want {
			if err == nil || !errors.Is(err, errGarbage) {
				t.Fatalf("parseReply(%#v) = (%+v, %v); want errGarbage", v, r, err)
			}
			return
		}
		if err != nil || r.kind != kind || r.n != num || r.fence != fence {
			t.Fatalf("parseReply(%#v) = (%+v, %v)", v, r, err)
		}
	})
}

// fuzzServer is a fake Redis that answers every EVALSHA/EVAL with the bytes
// in reply, verbatim (so they may be any garbage), and PING with PONG.
type fuzzServer struct {
	ln    net.Listener
	reply atomic.Pointer[[]byte]
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startFuzzServer(tb testing.TB) *fuzzServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &fuzzServer{ln: ln, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c)
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *fuzzServer) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		args, err := fuzzReadCommand(r)
		if err != nil {
			return
		}
		var out []byte
		switch strings.ToUpper(args[0]) {
		case "EVALSHA", "EVAL":
			out = *s.reply.Load()
		case "PING":
			out = []byte("+PONG\r\n")
		default: // HELLO, CLIENT ...: make go-redis fall back to RESP2
			out = []byte("-ERR unknown command\r\n")
		}
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

func fuzzReadCommand(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(line, "*") {
		return nil, errors.New("not an array")
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil || n < 1 {
		return nil, errors.New("bad array")
	}
	args := make([]string, n)
	for i := range args {
		h, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		size, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(h, "$")))
		if err != nil || size < 0 {
			return nil, errors.New("bad bulk")
		}
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		args[i] = string(buf[:size])
	}
	return args, nil
}

// FuzzScriptReplies sends fuzzed RESP bytes as the reply to the acquire,
// extend and release scripts. Whatever the bytes, the Backend must not panic
// and must answer in shape: a lease only with the asked key and owner and a
// positive token, a HeldError with a non-negative remaining TTL, or an error;
// batch results with one entry per lease or nil.
func FuzzScriptReplies(f *testing.F) {
	for _, seed := range []string{
		"*2\r\n:1\r\n:7\r\n",       // acquired, token 7
		"*2\r\n:0\r\n:1500\r\n",    // held, 1.5s left
		"*2\r\n:0\r\n:-1\r\n",      // held without TTL
		"*2\r\n:1\r\n:0\r\n",       // token 0
		"*2\r\n:1\r\n:-5\r\n",      // negative token
		"*2\r\n:2\r\n:1\r\n",       // bad flag
		":1\r\n",                   // extend/release success
		":0\r\n",                   // not owned
		":2\r\n",                   // out of range
		"$-1\r\n",                  // nil
		"-ERR boom\r\n",            // script error
		"-NOSCRIPT no script\r\n",  // NOSCRIPT: EVAL fallback gets it too
		"-BUSY running\r\n",        // transient
		"+OK\r\n",                  // status
		"*3\r\n:1\r\n:1\r\n:1\r\n", // long array
		"*2\r\n$1\r\n1\r\n:1\r\n",  // string flag
		"*-1\r\n",                  // nil array
		"%1\r\n:1\r\n:1\r\n",       // RESP3 map on a RESP2 connection
		"*2\r\n:1\r\n",             // truncated
		"garbage",                  // not RESP
	} {
		f.Add([]byte(seed))
	}
	srv := startFuzzServer(f)
	f.Fuzz(func(t *testing.T, reply []byte) {
		srv.reply.Store(&reply)
		c := redis.NewClient(&redis.Options{Addr: srv.ln.Addr().String(), Protocol: 2, DisableIdentity: true,
			MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 20 * time.Millisecond, ContextTimeoutEnabled: true,
			PoolSize: 1})
		defer c.Close()
		b := New(c)
		defer b.Close()
		ctx := context.Background()

		req := ctxlock.AcquireRequest{Key: "fz", Owner: "owner-1", TTL: time.Second, Timeout: time.Second}
		lease, err := b.Acquire(ctx, req)
		var held *ctxlock.HeldError
		switch {
		case err == nil:
			if lease.Key != req.Key || lease.Owner != req.Owner || lease.Token == 0 {
				t.Fatalf("reply %q: lease %+v for %+v", reply, lease, req)
			}
		case errors.As(err, &held):
			if held.Remaining < 0 {
				t.Fatalf("reply %q: negative remaining %v", reply, held.Remaining)
			}
		case errors.Is(err, ctxlock.ErrLost):
			t.Fatalf("reply %q: Acquire returned ErrLost: %v", reply, err)
		}
		leases := []ctxlock.Lease{{Key: "fz", Owner: "owner-1", Token: 1}}
		if errs := b.Extend(ctx, leases, time.Second); len(errs) != 1 {
			t.Fatalf("reply %q: Extend returned %d results for 1 lease", reply, len(errs))
		}
		if errs := b.Release(ctx, leases); len(errs) != 1 {
			t.Fatalf("reply %q: Release returned %d results for 1 lease", reply, len(errs))
		}
	})
}
