package etcd_test

import (
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/etcd"
	"github.com/ctxlock/ctxlock/internal/etcdtest"
)

// A client closed before the Backend (a misuse the docs warn of) makes
// every call fail at once with a permanent error: not after clientv3's
// retry interceptor has retried the closed connection's codes.Canceled a
// hundred times (about 2.5s per call, or until the context ends).
func TestClientClosedFirstFailsAtOnce(t *testing.T) {
	s := etcdtest.Start(t)
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Addr()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := etcd.New(c)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	l, err := b.Acquire(testCtx(t, 5*time.Second), ctxlock.AcquireRequest{Key: "k", Owner: "o", TTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	const bound = 500 * time.Millisecond
	check := func(what string, err error, took time.Duration) {
		t.Helper()
		if err == nil || errors.Is(err, ctxlock.ErrUnavailable) || took > bound {
			t.Errorf("%s on a closed client: %v after %v; want a permanent error within %v", what, err, took, bound)
		}
	}
	start := time.Now()
	_, err = b.Acquire(testCtx(t, 10*time.Second), ctxlock.AcquireRequest{Key: "k2", Owner: "o2", TTL: 5 * time.Second})
	check("Acquire", err, time.Since(start))
	start = time.Now()
	errs := b.Extend(testCtx(t, 10*time.Second), []ctxlock.Lease{l}, 5*time.Second)
	check("Extend", errs[0], time.Since(start))
	start = time.Now()
	errs = b.Release(testCtx(t, 10*time.Second), []ctxlock.Lease{l})
	check("Release", errs[0], time.Since(start))
}
