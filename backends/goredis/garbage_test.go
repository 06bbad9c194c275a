package goredis_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
)

// fakeRedis answers every script call with a fixed RESP reply.
func fakeRedis(t *testing.T, reply string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { conn.Close() })
			wg.Go(func() { serveFake(conn, reply) })
		}
	})
	return ln.Addr().String()
}

func serveFake(conn net.Conn, reply string) {
	defer conn.Close()
	r := bufio.NewReader(conn)
	for {
		args, err := readCommand(r)
		if err != nil {
			return
		}
		var out string
		switch strings.ToUpper(args[0]) {
		case "EVALSHA", "EVAL":
			out = reply
		case "PING":
			out = "+PONG\r\n"
		default: // HELLO, CLIENT ...: make go-redis fall back to RESP2
			out = "-ERR unknown command\r\n"
		}
		if _, err := conn.Write([]byte(out)); err != nil {
			return
		}
	}
}

func readCommand(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(line, "*") {
		return nil, errors.New("not an array")
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil {
		return nil, err
	}
	args := make([]string, n)
	for i := range args {
		if _, err := r.ReadString('\n'); err != nil { // $len
			return nil, err
		}
		s, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		args[i] = strings.TrimSuffix(s, "\r\n")
	}
	return args, nil
}

func TestGarbageReplies(t *testing.T) {
	for name, reply := range map[string]string{
		"string":      "+hello\r\n",
		"short array": "*1\r\n:1\r\n",
		"bad flag":    "*2\r\n:7\r\n:1\r\n",
		"nil":         "$-1\r\n",
		"big int":     ":42\r\n",
		"zero token":  "*2\r\n:1\r\n:0\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			c := redis.NewClient(&redis.Options{Addr: fakeRedis(t, reply), Protocol: 2, MaxRetries: -1,
				ReadTimeout: time.Second, DisableIdentity: true})
			defer c.Close()
			b := newBackend(t, c)
			ctx := context.Background()
			_, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: "g", Owner: "o", TTL: time.Second, Timeout: time.Second})
			if err == nil || errors.Is(err, ctxlock.ErrUnavailable) || errors.Is(err, ctxlock.ErrHeld) {
				t.Fatalf("Acquire with garbage reply: %v, want a permanent error", err)
			}
			l := ctxlock.Lease{Key: "g", Owner: "o", Token: 1}
			if errs := b.Extend(ctx, []ctxlock.Lease{l}, time.Second); errs == nil || errs[0] == nil ||
				errors.Is(errs[0], ctxlock.ErrUnavailable) || errors.Is(errs[0], ctxlock.ErrLost) {
				t.Fatalf("Extend with garbage reply: %v", errs)
			}
			if errs := b.Release(ctx, []ctxlock.Lease{l}); errs == nil || errs[0] == nil || errors.Is(errs[0], ctxlock.ErrUnavailable) {
				t.Fatalf("Release with garbage reply: %v", errs)
			}
		})
	}
}
