package redlock_test

import (
	"context"
	"errors"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/redlock"
)

// lostReply is a go-redis dial hook whose connections, once armed, lose the
// next reply: the command reached the server and ran there, but the client
// sees nothing until its read deadline passes (a reply lost in the network).
type lostReply struct{ armed atomic.Bool }

func (h *lostReply) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &lostReplyConn{Conn: c, h: h}, nil
	}
}
func (h *lostReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *lostReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

type lostReplyConn struct {
	net.Conn
	h        *lostReply
	deadline atomic.Int64 // read deadline, unix nanoseconds (0: none)
}

func (c *lostReplyConn) SetReadDeadline(t time.Time) error {
	c.deadline.Store(t.UnixNano())
	return c.Conn.SetReadDeadline(t)
}

func (c *lostReplyConn) SetDeadline(t time.Time) error {
	c.deadline.Store(t.UnixNano())
	return c.Conn.SetDeadline(t)
}

func (c *lostReplyConn) Read(b []byte) (int, error) {
	if c.h.armed.CompareAndSwap(true, false) {
		if d := c.deadline.Load(); d != 0 {
			<-time.After(time.Until(time.Unix(0, d))) // the reply never comes
		}
		return 0, os.ErrDeadlineExceeded
	}
	return c.Conn.Read(b)
}

// TestExtendLostReleasedOnUnansweredNodes: a lease gone from 3 of 5 nodes is
// lost; one node still had it and extended it, but its reply was lost. The
// lease must not stay there for the TTL of the extend: a lock held on fewer
// than a quorum is released at once, wherever it may still be (as a failed
// acquire is released on the nodes that did not answer).
func TestExtendLostReleasedOnUnansweredNodes(t *testing.T) {
	c := startNodes(t, 5)
	hook := &lostReply{}
	slow := c.servers[4].Client(t)
	slow.AddHook(hook)
	clients := append(append([]redis.UniversalClient(nil), c.clients[:4]...), slow)
	ctx := context.Background()
	if err := slow.Ping(ctx).Err(); err != nil { // a pooled connection, dialled
		t.Fatal(err)
	}
	key := uniqueKey("lost")
	var lease ctxlock.Lease
	var errs []error
	settled(t, clients, func(b *redlock.Backend) {
		lk, _, _ := b.Keys(key)
		lease = ctxlock.Lease{Key: key, Owner: owner(), Token: 1}
		for _, cl := range c.clients {
			if err := cl.Set(ctx, lk, lease.Owner, 10*time.Second).Err(); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 3 {
			c.clients[i].Del(ctx, lk)
		}
		hook.armed.Store(true)
		errs = b.Extend(ctx, []ctxlock.Lease{lease}, 2*time.Second)
	})
	if !errors.Is(errs[0], ctxlock.ErrLost) {
		t.Fatalf("Extend of a lease on 2 of 5 (one not answering): %v; want ErrLost", errs[0])
	}
	var qe *redlock.QuorumError
	if !errors.As(errs[0], &qe) || qe.Count(redlock.NodeUnreachable) != 1 {
		t.Fatalf("QuorumError %v; want node 4 unreachable", errs[0])
	}
	b := newBackend(t, c.clients)
	if got := holders(t, &cluster{servers: c.servers, clients: c.clients}, b, key); got[3] != "" || got[4] != "" {
		t.Fatalf("lease owners per node after Extend reported it lost: %q; want none (node 4 keeps it for the extend's TTL)", got)
	}
}
