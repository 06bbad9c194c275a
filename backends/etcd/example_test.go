package etcd_test

import (
	"context"
	"log"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/etcd"
)

// Example shows a Manager over etcd. It needs a cluster, so it is compiled
// but not run.
func Example() {
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"etcd-1:2379", "etcd-2:2379", "etcd-3:2379"},
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close() // after the Backend: the Backend does not own the client

	backend, err := etcd.New(client, etcd.WithPrefix("myapp/locks/"))
	if err != nil {
		log.Fatal(err)
	}
	defer backend.Close() // after the Manager: the Manager does not own its backend

	m := ctxlock.NewManager(backend, ctxlock.WithNamespace("billing:"))
	defer m.Close(context.Background())

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lock := m.NewLock("invoice/1234", ctxlock.WithTTL(10*time.Second), ctxlock.WithMetadata("billing-worker-7"))
	expired, err := lock.Lock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer lock.Unlock()

	select {
	case <-expired:
		log.Printf("lost the lock: %v", lock.Err())
	case <-time.After(time.Second): // the work, holding the lock
		// Pass lock.Token() (an etcd revision) to the resource with every write.
	}
}
