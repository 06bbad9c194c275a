package etcd_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/etcdtest"
)

// After an outage, a Manager locks again as soon as the cluster is back,
// not when gRPC's connect backoff next lets its connection try: the
// Backend's calls cut the backoff short (redial). gRPC's default backoff
// grows from 1s to 2 minutes over a long outage (a single member away for
// 150s left a Manager unable to lock for another 28s); here the client is
// given a 1-minute backoff from the first failed attempt, so that a short
// outage shows it.
func TestRedialAfterOutage(t *testing.T) {
	s := etcdtest.Start(t)
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{s.Addr()},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: time.Minute, Multiplier: 1, MaxDelay: time.Minute},
			MinConnectTimeout: 5 * time.Second,
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	m := newManager(t, newBackend(t, client))
	l := m.NewLock("k", ctxlock.WithTTL(2*time.Second))
	if _, err := l.Lock(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}

	s.Kill()
	// Calls during the outage fail, and the connection's next attempt is a
	// minute away (TRANSIENT_FAILURE) once one of them has found the
	// member gone.
	deadline := time.Now().Add(30 * time.Second)
	for client.ActiveConnection().GetState() != connectivity.TransientFailure {
		if time.Now().After(deadline) {
			t.Fatalf("the connection is %v 30s after the member was killed; want TRANSIENT_FAILURE", client.ActiveConnection().GetState())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		ok, _, err := m.NewLock("during").TryLock(ctx)
		cancel()
		if ok || err == nil {
			t.Fatalf("TryLock with the member killed = %v, %v; want an error", ok, err)
		}
	}

	s.Restart()
	back := time.Now()
	if _, err := l.Lock(testCtx(t, 20*time.Second)); err != nil {
		t.Fatalf("Lock once the member is back: %v (gRPC's connect backoff was not cut short)", err)
	}
	t.Logf("locked again %v after the member was back", time.Since(back).Round(time.Millisecond))
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
}
