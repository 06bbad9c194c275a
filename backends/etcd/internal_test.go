package etcd

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/etcdtest"
)

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		err       error
		transient bool
	}{
		{context.DeadlineExceeded, true},
		{status.Error(codes.DeadlineExceeded, "deadline"), true},
		{status.Error(codes.Unavailable, "connection refused"), true},
		{rpctypes.ErrGRPCNoLeader, true},
		{rpctypes.ErrGRPCNoSpace, true},
		{rpctypes.ErrGRPCRequestTooManyRequests, true},
		{rpctypes.ErrGRPCLeaseNotFound, true},
		{status.Error(codes.Unknown, "?"), true},
		{status.Error(codes.Canceled, "stream reset"), true},
		{clientv3.ErrNoAvailableEndpoints, true},
		{rpctypes.ErrGRPCRequestTooLarge, false},
		{rpctypes.ErrGRPCPermissionDenied, false},
		{rpctypes.ErrGRPCInvalidAuthToken, true},
		{rpctypes.ErrGRPCAuthOldRevision, true},
		{rpctypes.ErrGRPCAuthFailed, false},
		{status.Error(codes.Canceled, "grpc: the client connection is closing"), false},
		{context.Canceled, false},
	} {
		got := classify("op", c.err)
		if errors.Is(got, ctxlock.ErrUnavailable) != c.transient {
			t.Errorf("classify(%v) = %v; transient %v, want %v", c.err, got, !c.transient, c.transient)
		}
	}
}

// An owner whose lease ID is taken by a live lease (a hash collision) is
// refused with a permanent error, not ErrUnavailable (whose release would
// revoke the other hold's lease), and takes nothing.
func TestLeaseIDCollision(t *testing.T) {
	s := etcdtest.Start(t)
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Addr()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	b, err := New(client)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const owner = "colliding"
	if _, err := b.leases.LeaseGrant(ctx, leaseGrant(leaseID(owner), 30)); err != nil {
		t.Fatal(err)
	}
	_, err = b.Acquire(ctx, ctxlock.AcquireRequest{Key: "k", Owner: owner, TTL: time.Second, Timeout: 5 * time.Second})
	if err == nil || errors.Is(err, ctxlock.ErrUnavailable) || errors.Is(err, ctxlock.ErrHeld) {
		t.Fatalf("Acquire with a taken lease ID: %v; want a permanent error", err)
	}
	resp, err := client.Get(ctx, b.LockKey("k"))
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("key taken after the refused grant: %v, %v", resp, err)
	}
	if ttl, err := client.TimeToLive(ctx, clientv3.LeaseID(leaseID(owner))); err != nil || ttl.TTL < 20 {
		t.Fatalf("the other lease: %v, %v; want it untouched", ttl, err)
	}
}

func TestLeaseIDs(t *testing.T) {
	seen := map[int64]string{}
	for i := range 10000 {
		o := fmt.Sprint("owner-", i)
		id := leaseID(o)
		if id <= 0 {
			t.Fatalf("leaseID(%q) = %d; want positive", o, id)
		}
		if p, dup := seen[id]; dup {
			t.Fatalf("leaseID(%q) = leaseID(%q)", o, p)
		}
		seen[id] = o
		if leaseID(o) != id {
			t.Fatal("leaseID not deterministic")
		}
	}
}

func TestTTLSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int64{
		time.Nanosecond: 1, time.Second: 1, time.Second + 1: 2, 1500 * time.Millisecond: 2, time.Hour: 3600,
	} {
		if got := ttlSeconds(d); got != want {
			t.Errorf("ttlSeconds(%v) = %d; want %d", d, got, want)
		}
	}
}

func leaseGrant(id, ttl int64) *pb.LeaseGrantRequest { return &pb.LeaseGrantRequest{ID: id, TTL: ttl} }

// A watch resumes after the last event it delivered, not after the header's
// revision, which runs ahead while a backlog is sent in batches.
func TestResumeRevision(t *testing.T) {
	ev := func(rev int64) *clientv3.Event {
		return &clientv3.Event{Type: clientv3.EventTypeDelete, Kv: &mvccpb.KeyValue{Key: []byte("k"), ModRevision: rev}}
	}
	resp := clientv3.WatchResponse{Header: pb.ResponseHeader{Revision: 2000}, Events: []*clientv3.Event{ev(1400), ev(1500)}}
	if got := resumeRevision(0, resp.Events); got != 1501 {
		t.Fatalf("resume after events up to 1500 (header 2000) at %d; want 1501", got)
	}
	if got := resumeRevision(1501, nil); got != 1501 {
		t.Fatalf("a response without events moved the resume point to %d", got)
	}
}
