package postgres_test

import (
	"context"
	"log"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/postgres"
)

// Example shows a Manager over PostgreSQL. It needs a server, so it is
// compiled but not run.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app@localhost:5432/app")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close() // after the Backend: the Backend does not own the pool

	backend, err := postgres.New(ctx, pool) // CREATE TABLE IF NOT EXISTS ctxlock_leases
	if err != nil {
		log.Fatal(err)
	}
	defer backend.Close() // after the Manager: the Manager does not own its backend

	m := ctxlock.NewManager(backend, ctxlock.WithNamespace("myapp:"))
	defer m.Close(context.Background())

	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	lock := m.NewLock("invoice/1234", ctxlock.WithTTL(10*time.Second), ctxlock.WithMetadata("billing-worker-7"))
	expired, err := lock.Lock(lctx)
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

// ExampleCreateTableSQL prints the DDL for a DBA to apply, for Backends
// made with WithoutCreateTable.
func ExampleCreateTableSQL() {
	ddl, err := postgres.CreateTableSQL("locks.leases")
	if err != nil {
		log.Fatal(err)
	}
	log.Println(ddl)
}
