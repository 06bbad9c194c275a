package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/etcd"
	"github.com/ctxlock/ctxlock/internal/etcdtest"
)

// getKV returns key's value, lease and revision; ok false when absent.
func getKV(t testing.TB, c *clientv3.Client, key string) (value string, lease int64, modRev int64, ok bool) {
	t.Helper()
	resp, err := c.Get(testCtx(t, 5*time.Second), key)
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0, 0, false
	}
	kv := resp.Kvs[0]
	return string(kv.Value), kv.Lease, kv.ModRevision, true
}

// leaseTTL returns the remaining TTL of a lease in seconds, -1 when it does
// not exist.
func leaseTTL(t testing.TB, c *clientv3.Client, id int64) int64 {
	t.Helper()
	resp, err := c.TimeToLive(testCtx(t, 5*time.Second), clientv3.LeaseID(id))
	if err != nil {
		t.Fatalf("time to live of %x: %v", id, err)
	}
	return resp.TTL
}

// A hold's token is the revision that created its key: it increases
// across holders and across a crash and restart of the server (revisions
// are durable), and the key holds the owner with the hold's lease.
func TestTokensAreRevisions(t *testing.T) {
	s, client := start(t)
	b := newBackend(t, client)
	m1 := newManager(t, b)
	m2 := newManager(t, newBackend(t, client))
	l1, l2 := m1.NewLock("k"), m2.NewLock("k")
	var last uint64
	lockUnlock := func(l ctxlock.Lock, what string) {
		t.Helper()
		if _, err := l.Lock(testCtx(t, 10*time.Second)); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		_, lease, rev, ok := getKV(t, client, b.LockKey("k"))
		if !ok || lease == 0 {
			t.Fatalf("%s: key %q absent or without a lease while held", what, b.LockKey("k"))
		}
		if tok := l.Token(); tok != uint64(rev) || tok <= last {
			t.Fatalf("%s: token %d; want the key's revision %d, above %d", what, tok, rev, last)
		}
		last = l.Token()
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
	}
	lockUnlock(l1, "first")
	lockUnlock(l2, "other manager")
	lockUnlock(l1, "again")
	s.Kill()
	s.Restart()
	lockUnlock(l2, "after a crash and restart")
}

// A released hold leaves nothing behind: neither its key, nor its
// metadata key, nor its lease.
func TestReleaseLeavesNothing(t *testing.T) {
	_, client := start(t)
	b := newBackend(t, client)
	m := newManager(t, b)
	l := m.NewLock("job", ctxlock.WithMetadata("worker-7"), ctxlock.WithTTL(30*time.Second))
	if _, err := l.Lock(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	owner, lease, _, ok := getKV(t, client, b.LockKey("job"))
	if !ok || owner == "" {
		t.Fatal("no key while held")
	}
	meta, metaLease, _, ok := getKV(t, client, strings.Replace(b.LockKey("job"), "/k/", "/m/", 1))
	if !ok || meta != "worker-7" || metaLease != lease {
		t.Fatalf("metadata key: %q on lease %x (present %v); want worker-7 on the hold's lease %x", meta, metaLease, ok, lease)
	}
	if ttl := leaseTTL(t, client, lease); ttl < 29 || ttl > 30 {
		t.Fatalf("lease TTL %ds; want 30s (the lock's TTL)", ttl)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 10*time.Second, "the release (asynchronous after Unlock)", func() bool {
		_, _, _, held := getKV(t, client, b.LockKey("job"))
		return !held
	})
	if ttl := leaseTTL(t, client, lease); ttl != -1 {
		t.Fatalf("the hold's lease is still there (TTL %ds) after its release", ttl)
	}
	resp, err := client.Get(testCtx(t, 5*time.Second), etcd.DefaultPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("keys under %q after the release: %d (%v); want 0", etcd.DefaultPrefix, resp.Count, err)
	}
}

// A refused Acquire reports the holder's remaining TTL and revokes the
// lease it granted itself; the holder keeps the key.
func TestRefusedAcquireLeavesNoLease(t *testing.T) {
	_, client := start(t)
	b := newBackend(t, client)
	ctx := testCtx(t, 10*time.Second)
	held, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: "k", Owner: "holder", TTL: 20 * time.Second, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	before, err := client.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Acquire(ctx, ctxlock.AcquireRequest{Key: "k", Owner: "refused", TTL: 20 * time.Second, Timeout: 5 * time.Second})
	var he *ctxlock.HeldError
	if !errors.As(err, &he) {
		t.Fatalf("second Acquire: %v; want a HeldError", err)
	}
	if he.Remaining <= 10*time.Second || he.Remaining > 20*time.Second {
		t.Fatalf("Remaining %v; want the holder's, about 20s", he.Remaining)
	}
	after, err := client.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Leases) != len(before.Leases) {
		t.Fatalf("%d leases before the refused attempt, %d after: its lease was not revoked", len(before.Leases), len(after.Leases))
	}
	if owner, _, rev, ok := getKV(t, client, b.LockKey("k")); !ok || owner != "holder" || uint64(rev) != held.Token {
		t.Fatalf("key: owner %q, revision %d (present %v); want the holder's, %d", owner, rev, ok, held.Token)
	}
}

// Extend reports a hold whose key was deleted, or whose lease was revoked,
// as lost; and refuses to lengthen a lease (etcd renews a lease only for the
// TTL it was granted with) without losing it.
func TestExtend(t *testing.T) {
	_, client := start(t)
	b := newBackend(t, client)
	ctx := testCtx(t, 20*time.Second)
	acquire := func(key string) ctxlock.Lease {
		t.Helper()
		l, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: key, Owner: "o-" + key, TTL: 2 * time.Second, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	ok, deleted, revoked := acquire("ok"), acquire("deleted"), acquire("revoked")
	if _, err := client.Delete(ctx, b.LockKey("deleted")); err != nil {
		t.Fatal(err)
	}
	_, lease, _, _ := getKV(t, client, b.LockKey("revoked"))
	if _, err := client.Revoke(ctx, clientv3.LeaseID(lease)); err != nil {
		t.Fatal(err)
	}
	errs := b.Extend(ctx, []ctxlock.Lease{ok, deleted, revoked}, 2*time.Second)
	if len(errs) != 3 || errs[0] != nil || !errors.Is(errs[1], ctxlock.ErrLost) || !errors.Is(errs[2], ctxlock.ErrLost) {
		t.Fatalf("Extend = %v; want nil, ErrLost, ErrLost", errs)
	}
	errs = b.Extend(ctx, []ctxlock.Lease{ok}, 5*time.Second)
	if len(errs) != 1 || !errors.Is(errs[0], ctxlock.ErrInvalidOption) {
		t.Fatalf("Extend to a longer TTL = %v; want ErrInvalidOption", errs)
	}
	if errs := b.Extend(ctx, []ctxlock.Lease{ok}, 1500*time.Millisecond); len(errs) != 1 || errs[0] != nil {
		t.Fatalf("Extend to a TTL within the granted one = %v; want nil (the hold kept)", errs)
	}
}

// Keys are bytes: NUL and invalid UTF-8 lock and release like any other.
func TestBinaryKeys(t *testing.T) {
	_, client := start(t)
	b := newBackend(t, client)
	m := newManager(t, b)
	for _, key := range []string{"a\x00b", "\xff\xfe", "ä/ö"} {
		l := m.NewLock(key)
		if ok, _, err := l.TryLock(testCtx(t, 10*time.Second)); !ok || err != nil {
			t.Fatalf("TryLock(%q): %v, %v", key, ok, err)
		}
		if owner, _, _, ok := getKV(t, client, b.LockKey(key)); !ok || owner == "" {
			t.Fatalf("key %q not stored", key)
		}
		other := newManager(t, b).NewLock(key)
		if ok, _, err := other.TryLock(testCtx(t, 10*time.Second)); ok || err != nil {
			t.Fatalf("second TryLock(%q): %v, %v; want false, nil", key, ok, err)
		}
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
	}
}

// Health names an unreachable member while the cluster has a quorum, and
// fails (ErrUnavailable) when no member answers.
func TestHealth(t *testing.T) {
	c := etcdtest.StartCluster(t, 3)
	client := newClient(t, c.Endpoints()...)
	b := newBackend(t, client)
	conds, err := b.Health(testCtx(t, 10*time.Second))
	if err != nil || len(conds) != 0 {
		t.Fatalf("healthy cluster: %v, %v; want no conditions", conds, err)
	}
	down := c.Members[(c.Leader()+1)%3]
	down.Kill()
	conds, err = b.Health(testCtx(t, 10*time.Second))
	if err != nil || len(conds) != 1 || !strings.Contains(conds[0], down.Addr()) {
		t.Fatalf("one member down: %q, %v; want one condition naming %s and no error", conds, err, down.Addr())
	}
	for _, s := range c.Members {
		s.Kill()
	}
	// Each endpoint's status is bounded (2s): the report comes before
	// the caller's deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if conds, err := b.Health(ctx); !errors.Is(err, ctxlock.ErrUnavailable) || len(conds) != 3 || ctx.Err() != nil {
		t.Fatalf("every member down: %q, %v; want three conditions and ErrUnavailable, before the caller's deadline", conds, err)
	}
}

// A closed Backend refuses every call with ErrClosed, and New refuses a nil
// client.
func TestClosedAndNil(t *testing.T) {
	if _, err := etcd.New(nil); !errors.Is(err, ctxlock.ErrInvalidOption) {
		t.Fatalf("New(nil) = %v; want ErrInvalidOption", err)
	}
	_, client := start(t)
	b := newBackend(t, client)
	_ = b.Close()
	ctx := testCtx(t, 5*time.Second)
	if _, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: "k", Owner: "o", TTL: time.Second}); !errors.Is(err, etcd.ErrClosed) {
		t.Errorf("Acquire: %v", err)
	}
	l := []ctxlock.Lease{{Key: "k", Owner: "o", Token: 1}}
	if errs := b.Extend(ctx, l, time.Second); !errors.Is(errs[0], etcd.ErrClosed) {
		t.Errorf("Extend: %v", errs)
	}
	if errs := b.Release(ctx, l); !errors.Is(errs[0], etcd.ErrClosed) {
		t.Errorf("Release: %v", errs)
	}
	if _, err := b.Health(ctx); !errors.Is(err, etcd.ErrClosed) {
		t.Errorf("Health: %v", err)
	}
	if ch, stop := b.Watch("k"); ch != nil {
		stop()
		t.Error("Watch on a closed Backend returned a channel")
	}
}

// Batches larger than etcd's 128 operations per transaction (the read of
// Extend is split) and than the 64 revokes Release has in flight: one
// result per lease, in order, the deleted key's lease lost, every key gone
// after the release.
func TestLargeBatches(t *testing.T) {
	_, client := start(t)
	b := newBackend(t, client)
	ctx := testCtx(t, 60*time.Second)
	const n = 300
	leases := make([]ctxlock.Lease, n)
	for i := range leases {
		l, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: fmt.Sprint("k", i), Owner: fmt.Sprint("o", i), TTL: 5 * time.Second, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		leases[i] = l
	}
	const gone = 200 // in the second transaction of the read
	if _, err := client.Delete(ctx, b.LockKey(leases[gone].Key)); err != nil {
		t.Fatal(err)
	}
	errs := b.Extend(ctx, leases, 5*time.Second)
	if len(errs) != n {
		t.Fatalf("Extend of %d leases: %d results", n, len(errs))
	}
	for i, err := range errs {
		if (i == gone) != errors.Is(err, ctxlock.ErrLost) || (i != gone && err != nil) {
			t.Fatalf("Extend result %d: %v (lost expected only at %d)", i, err, gone)
		}
	}
	errs = b.Release(ctx, leases)
	if len(errs) != n {
		t.Fatalf("Release of %d leases: %d results", n, len(errs))
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Release result %d: %v", i, err)
		}
	}
	resp, err := client.Get(ctx, etcd.DefaultPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("keys left after releasing every lease: %v (%v)", resp.Count, err)
	}
	left, err := client.Leases(ctx)
	if err != nil || len(left.Leases) != 0 {
		t.Fatalf("leases left after releasing every lease: %d (%v)", len(left.Leases), err)
	}
}
