package goredis_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// An AcquireRequest.Timeout ≤ 0 sets no bound of its own (as in every
// backend of this module): the attempt works, and ctx bounds it — the
// pipeline carrying it too, which ran on up to the client's read timeout
// (for ever without one), holding up Close and the calls behind it.
func TestAcquireTimeoutNotPositive(t *testing.T) {
	s := redistest.StartServer(t)
	b := newBackend(t, s.Client(t))
	ctx := context.Background()
	for _, timeout := range []time.Duration{0, -time.Second} {
		l, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: "tz", Owner: owner(), TTL: time.Second, Timeout: timeout})
		if err != nil {
			t.Fatalf("Acquire with Timeout %v: %v", timeout, err)
		}
		if errs := b.Release(ctx, []ctxlock.Lease{l}); errors.Join(errs...) != nil {
			t.Fatal(errs)
		}
	}

	// A server that never answers: ctx ends the attempt.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	c := redis.NewClient(&redis.Options{Addr: ln.Addr().String(), Protocol: 2, DisableIdentity: true,
		ContextTimeoutEnabled: true, ReadTimeout: 20 * time.Second, WriteTimeout: 20 * time.Second, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	silent := newBackend(t, c)
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = silent.Acquire(cctx, ctxlock.AcquireRequest{Key: "tz", Owner: owner(), TTL: time.Second, Timeout: 0})
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ctxlock.ErrUnavailable) {
		t.Fatalf("Acquire with Timeout 0 against a silent server: %v; want ctx's deadline (or the pipeline's timeout)", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Acquire returned after %v; ctx ended after 200ms", d)
	}
	// The pipeline carrying it ends with ctx too, not at the client's read
	// timeout: Close, which waits for it, returns soon.
	start = time.Now()
	silent.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %v: the pipeline of a Timeout-0 call outlived its ctx", d)
	}
}
