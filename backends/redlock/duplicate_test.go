package redlock_test

import (
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/redlock"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// TestNewRejectsDuplicateNodes: the same client twice, or two clients of
// the same server, would let one server count as several nodes of the
// quorum: with [A, A, B] a lock is granted by A alone (B down), and A's
// loss takes two of the three "nodes" with it. New refuses them.
func TestNewRejectsDuplicateNodes(t *testing.T) {
	c := startNodes(t, 2)
	other := redis.NewClient(redistest.ClientOptions(c.servers[0].Addr()))
	t.Cleanup(func() { _ = other.Close() })
	for name, clients := range map[string][]redis.UniversalClient{
		"same client":       {c.clients[0], c.clients[0], c.clients[1]},
		"same server twice": {c.clients[0], other, c.clients[1]},
	} {
		t.Run(name, func(t *testing.T) {
			b, err := redlock.New(clients)
			if err == nil {
				defer b.Close()
				// Show what it would do: with node B down, A alone grants.
				c.servers[1].Stop()
				defer c.servers[1].Cont()
				_, aerr := acquire(t, b, uniqueKey("dup"), 10*time.Second)
				t.Fatalf("New with a server passed twice: no error (Acquire with the only other server down: %v); want ErrInvalidOption", aerr)
			}
			if !errors.Is(err, ctxlock.ErrInvalidOption) {
				t.Fatalf("New with a server passed twice: %v; want ErrInvalidOption", err)
			}
		})
	}
}

// Sentinel clients of different masters all report the address
// "FailoverClient": New must not take them for one server.
func TestNewAcceptsDistinctFailoverClients(t *testing.T) {
	var clients []redis.UniversalClient
	for _, name := range []string{"m1", "m2", "m3"} {
		c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: name, SentinelAddrs: []string{"127.0.0.1:1"}})
		t.Cleanup(func() { _ = c.Close() })
		clients = append(clients, c)
	}
	b, err := redlock.New(clients)
	if err != nil {
		t.Fatalf("New with three Sentinel clients: %v", err)
	}
	_ = b.Close()
	if _, err := redlock.New([]redis.UniversalClient{clients[0], clients[0], clients[1]}); !errors.Is(err, ctxlock.ErrInvalidOption) {
		t.Fatalf("New with a Sentinel client twice: %v; want ErrInvalidOption", err)
	}
}

// A Cluster passed twice counts twice in the quorum as a server does: New
// refuses two Cluster clients that share a seed address, whatever the order
// of their seeds, and accepts Cluster clients of distinct addresses. (No I/O:
// New does not connect.)
func TestNewRejectsSameClusterTwice(t *testing.T) {
	cluster := func(addrs ...string) redis.UniversalClient {
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	for name, clients := range map[string][]redis.UniversalClient{
		"same seeds":           {cluster("127.0.0.1:7001", "127.0.0.1:7002"), cluster("127.0.0.1:7001", "127.0.0.1:7002"), cluster("127.0.0.1:7101")},
		"seeds in other order": {cluster("127.0.0.1:7001", "127.0.0.1:7002"), cluster("127.0.0.1:7002", "127.0.0.1:7001"), cluster("127.0.0.1:7101")},
		"one seed in common":   {cluster("127.0.0.1:7001", "127.0.0.1:7002"), cluster("127.0.0.1:7003", "127.0.0.1:7001"), cluster("127.0.0.1:7101")},
	} {
		if b, err := redlock.New(clients); !errors.Is(err, ctxlock.ErrInvalidOption) {
			if err == nil {
				_ = b.Close()
			}
			t.Errorf("New with %s: %v; want ErrInvalidOption", name, err)
		}
	}
	b, err := redlock.New([]redis.UniversalClient{cluster("127.0.0.1:7001"), cluster("127.0.0.1:7101"), cluster("127.0.0.1:7201")})
	if err != nil {
		t.Fatalf("New with three distinct Clusters: %v", err)
	}
	_ = b.Close()
}
