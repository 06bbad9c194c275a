package goredis_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/locktest"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// minimalACL is the ACL the package documentation states (see "Redis
// ACL" in doc.go): the commands of the scripts and the subscription, the
// keys in braces, the release channels and the inboxes.
var minimalACL = strings.Fields(`on >pw resetkeys ~{* resetchannels &{*}:released &*ctxlock:inbox:* -@all
	+evalsha +eval +publish +subscribe +unsubscribe +ping
	+get +set +exists +incr +pexpire +del +pttl +time
	+lpop +lindex +llen +lrem +rpush +lpush +linsert +hget +hset +hdel`)

// TestConformanceMinimalACL runs the conformance suite as a user with no
// more than minimalACL.
func TestConformanceMinimalACL(t *testing.T) {
	s := redistest.StartServer(t)
	admin := s.Client(t)
	if err := admin.Do(context.Background(), append([]any{"ACL", "SETUSER", "locker"}, anys(minimalACL)...)...).Err(); err != nil {
		t.Fatal(err)
	}
	c := s.Client(t, func(o *redis.Options) { o.Username, o.Password = "locker", "pw" })
	locktest.Run(t, func(t *testing.T) ctxlock.Backend { return faulty(t, c) }, locktest.WithTTL(conformanceTTL))
	if n := cmdStat(t, admin, "subscribe", "rejected_calls") + cmdStat(t, admin, "evalsha", "rejected_calls") + cmdStat(t, admin, "eval", "rejected_calls"); n != 0 {
		t.Errorf("%d commands were refused", n)
	}
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// TestConformanceMinimalACLCluster: in Cluster mode the user needs
// COMMAND and CLUSTER INFO, SLOTS and SHARDS besides minimalACL.
func TestConformanceMinimalACLCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	acl := append(append([]string(nil), minimalACL...), "+command", "+cluster|info", "+cluster|slots", "+cluster|shards")
	for _, n := range cl.Nodes() {
		if err := n.Client(t).Do(context.Background(), append([]any{"ACL", "SETUSER", "locker"}, anys(acl)...)...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	c := cl.Client(t, func(o *redis.ClusterOptions) { o.Username, o.Password = "locker", "pw" })
	locktest.Run(t, func(t *testing.T) ctxlock.Backend { return faulty(t, c) }, locktest.WithTTL(conformanceTTL))
	for _, n := range cl.Nodes() {
		if log, err := n.Client(t).Do(context.Background(), "ACL", "LOG").Slice(); err != nil || len(log) != 0 {
			t.Errorf("%s: ACL LOG %v %v", n.Addr(), log, err)
		}
	}
}

// TestReleaseWithoutChannels: a user without pub/sub channels (Redis 7's
// default for new users) can lock, but a release fails with a permanent
// ACL error after its script deleted the lease.
func TestReleaseWithoutChannels(t *testing.T) {
	s := redistest.StartServer(t)
	admin := s.Client(t)
	ctx := context.Background()
	c := userWithoutChannels(t, s)
	b := newBackend(t, c)
	l := acquire(t, b, "k", time.Minute)
	err := b.Release(ctx, []ctxlock.Lease{l})[0]
	if err == nil || !strings.Contains(err.Error(), "can't publish") || errors.Is(err, ctxlock.ErrUnavailable) {
		t.Fatalf("Release: %v, want a permanent ACL error", err)
	}
	lk, _, _ := b.Keys("k")
	if n := admin.Exists(ctx, lk).Val(); n != 0 {
		t.Fatalf("the lease is still stored after the failed release")
	}
}

// userWithoutChannels creates on s the ACL user "locker", with every
// command and key but no pub/sub channel (Redis 7's default for a new
// user), and returns a client logged in as it.
func userWithoutChannels(t *testing.T, s *redistest.Server) *redis.Client {
	t.Helper()
	if err := s.Client(t).Do(context.Background(), "ACL", "SETUSER", "locker", "on", ">pw", "~*", "resetchannels", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	return s.Client(t, func(o *redis.Options) { o.Username, o.Password = "locker", "pw" })
}
