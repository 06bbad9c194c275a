package redlock_test

import (
	"context"
	"errors"
	"log"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/redlock"
)

// Example shows a Manager over three independent Redis masters. It needs
// the servers, so it is compiled but not run.
func Example() {
	var clients []redis.UniversalClient
	for _, addr := range []string{"redis-a:6379", "redis-b:6379", "redis-c:6379"} {
		c := redis.NewClient(&redis.Options{
			Addr:                  addr,
			ContextTimeoutEnabled: true,
			DialTimeout:           time.Second,
			ReadTimeout:           time.Second,
			WriteTimeout:          time.Second,
		})
		defer c.Close()
		clients = append(clients, c)
	}
	backend, err := redlock.New(clients)
	if err != nil {
		log.Fatal(err)
	}
	defer backend.Close() // after the Manager

	m := ctxlock.NewManager(backend, ctxlock.WithNamespace("myapp:"))
	defer m.Close(context.Background())

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lock := m.NewLock("nightly-report")
	expired, err := lock.Lock(ctx)
	if err != nil {
		var qe *redlock.QuorumError
		if errors.As(err, &qe) {
			log.Printf("no quorum: %d of %d nodes unreachable", qe.Count(redlock.NodeUnreachable), qe.Nodes)
		}
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
