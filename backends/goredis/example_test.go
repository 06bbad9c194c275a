package goredis_test

import (
	"context"
	"log"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
)

// Example shows a Manager over one Redis server (a Sentinel setup is the
// same with redis.NewFailoverClient). It needs the server, so it is
// compiled but not run.
func Example() {
	client := redis.NewClient(&redis.Options{
		Addr:                  "localhost:6379",
		ContextTimeoutEnabled: true, // so that WithAcquireTimeout bounds each attempt's I/O
	})
	defer client.Close()
	backend := goredis.New(client)
	defer backend.Close() // after the Manager: the Manager does not own its backend

	m := ctxlock.NewManager(backend, ctxlock.WithNamespace("myapp:"))
	defer m.Close(context.Background())

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lock := m.NewLock("invoice/1234", ctxlock.WithTTL(10*time.Second))
	expired, err := lock.Lock(ctx) // waits in the key's queue on the server while held
	if err != nil {
		log.Fatal(err)
	}
	defer lock.Unlock()

	select {
	case <-expired:
		log.Printf("lost the lock: %v", lock.Err())
	case <-time.After(time.Second): // the work, holding the lock
		// Pass lock.Token() to the resource with every write.
	}
}

// With Redis Cluster the backend keeps each key's lease, fencing counter and
// queue in one hash slot, and batches per master.
func Example_cluster() {
	client := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:                 []string{"redis-1:6379", "redis-2:6379", "redis-3:6379"},
		ContextTimeoutEnabled: true,
	})
	defer client.Close()
	backend := goredis.New(client)
	defer backend.Close()

	m := ctxlock.NewManager(backend)
	defer m.Close(context.Background())

	leader := m.NewLock("scheduler-leader")
	ok, expired, err := leader.TryLock(context.Background())
	if err != nil || !ok {
		return // a follower (or Redis is unreachable): try again later
	}
	defer leader.Unlock()
	<-expired // lead until the hold ends
}

// With Redis Sentinel, a failover client finds the master through the
// sentinels and follows it when they fail it over. Leases reach the
// replicas asynchronously: run at least two replicas with
// min-replicas-to-write 1 so that a demoted master stops taking leases (see
// the package doc, Redis Sentinel).
func Example_sentinel() {
	client := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:            "mymaster",
		SentinelAddrs:         []string{"sentinel-1:26379", "sentinel-2:26379", "sentinel-3:26379"},
		ContextTimeoutEnabled: true,
	})
	defer client.Close()
	// A lease counts as taken or refreshed once one replica has it, so that
	// a failover right after the acquire does not lose it.
	backend := goredis.New(client, goredis.WithReplicaAcks(1, 50*time.Millisecond))
	defer backend.Close()

	// Redis times a WAIT out on its 100ms timer: give each attempt the time
	// to hear that the replicas fell short.
	m := ctxlock.NewManager(backend, ctxlock.WithDefaultLockOptions(ctxlock.WithAcquireTimeout(250*time.Millisecond)))
	defer m.Close(context.Background())

	// A TTL longer than a failover takes (down-after-milliseconds plus the
	// promotion) lets a hold live through one.
	lock := m.NewLock("nightly-report", ctxlock.WithTTL(30*time.Second))
	expired, err := lock.Lock(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer lock.Unlock()
	<-expired
}

// With WithClockTokens the fencing counters of keys nobody locks for an
// hour disappear, and tokens keep increasing across a restart of a Redis
// without persistence: each token is at least the server's clock in µs.
// Every Backend that locks these keys must use the option.
func ExampleWithClockTokens() {
	client := redis.NewClient(&redis.Options{Addr: "localhost:6379", ContextTimeoutEnabled: true})
	defer client.Close()
	backend := goredis.New(client, goredis.WithClockTokens(time.Hour))
	defer backend.Close()

	m := ctxlock.NewManager(backend)
	defer m.Close(context.Background())

	lock := m.NewLock("order:123") // one of many per-entity keys
	if _, err := lock.Lock(context.Background()); err != nil {
		log.Fatal(err)
	}
	defer lock.Unlock()
	// lock.Token() is about 1.8e15 (µs since 1970): pass it to the resource
	// with every write, as any fencing token.
}
