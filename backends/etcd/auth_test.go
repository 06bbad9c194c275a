package etcd_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/etcd"
	"github.com/ctxlock/ctxlock/backends/locktest"
	"github.com/ctxlock/ctxlock/internal/etcdtest"
)

// startWithAuth starts a member with etcd authentication on: a root user,
// and a user "locker" whose only permission is read and write on the keys
// under etcd.DefaultPrefix, as the package docs ask; "stranger" has none.
func startWithAuth(t *testing.T, args ...string) *etcdtest.Server {
	t.Helper()
	s := etcdtest.Start(t, args...)
	root := newClient(t, s.Addr())
	ctx := testCtx(t, 30*time.Second)
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	_, err := root.UserAdd(ctx, "root", "rootpw")
	must("add root", err)
	_, err = root.UserGrantRole(ctx, "root", "root")
	must("grant root", err)
	_, err = root.RoleAdd(ctx, "locker")
	must("add role", err)
	_, err = root.RoleGrantPermission(ctx, "locker", etcd.DefaultPrefix, clientv3.GetPrefixRangeEnd(etcd.DefaultPrefix), clientv3.PermissionType(clientv3.PermReadWrite))
	must("grant permission", err)
	for _, u := range []string{"locker", "stranger"} {
		_, err = root.UserAdd(ctx, u, u+"pw")
		must("add "+u, err)
	}
	_, err = root.UserGrantRole(ctx, "locker", "locker")
	must("grant locker", err)
	_, err = root.AuthEnable(ctx)
	must("enable auth", err)
	return s
}

func authClient(t testing.TB, s *etcdtest.Server, user string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints: []string{s.Addr()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		Username: user, Password: user + "pw",
	})
	if err != nil {
		t.Fatalf("client as %s: %v", user, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// The conformance suite passes as a user with only the documented
// permission (read and write on the prefix): the Backend's lease calls,
// made on the client's connection, carry its auth token.
func TestConformanceAuth(t *testing.T) {
	s := startWithAuth(t)
	client := authClient(t, s, "locker")
	locktest.Run(t, func(t *testing.T) ctxlock.Backend {
		b := newBackend(t, client)
		return &faultyBackend{Outage: locktest.NewOutage(b), b: b, client: client}
	}, locktest.WithTTL(conformanceTTL))
}

// A user without permission on the prefix gets a clear, permanent error
// from Lock at once, not retries until its context ends.
func TestNoPermissionIsPermanent(t *testing.T) {
	s := startWithAuth(t)
	m := newManager(t, newBackend(t, authClient(t, s, "stranger")))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := m.NewLock("k").Lock(ctx)
	if err == nil || errors.Is(err, ctxlock.ErrUnavailable) || ctx.Err() != nil {
		t.Fatalf("Lock without permission: %v (ctx %v); want a permanent error before the deadline", err, ctx.Err())
	}
	t.Logf("Lock without permission: %v", err)
	// The attempt's lease (granting one needs no permission) is given
	// back, not left to lapse.
	leases, lerr := authClient(t, s, "root").Leases(testCtx(t, 10*time.Second))
	if lerr != nil || len(leases.Leases) != 0 {
		t.Fatalf("leases after the refused Lock: %v (%v); want none", leases.Leases, lerr)
	}
}

// A hold outlives the auth token its client authenticated with: with
// tokens that expire after a second, a hold with a 2s TTL is refreshed for
// 5s (its keep-alive stream, opened with the first token, is reopened with
// a new one when etcd refuses the old one), and its expiry channel stays
// open throughout.
func TestHoldOutlivesAuthToken(t *testing.T) {
	s := startWithAuth(t, "--auth-token-ttl", "1")
	m := newManager(t, newBackend(t, authClient(t, s, "locker")))
	l := m.NewLock("k", ctxlock.WithTTL(2*time.Second))
	expired, err := l.Lock(testCtx(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-expired:
		t.Fatalf("the hold ended while its tokens expired: %v", l.Err())
	case <-time.After(5 * time.Second): // five token lifetimes of refreshes
	}
	if err := l.Unlock(); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
}
