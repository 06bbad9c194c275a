package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/locktest"
	"github.com/ctxlock/ctxlock/backends/postgres"
	"github.com/ctxlock/ctxlock/internal/pgtest"
)

// conformanceTTL is the lease TTL of the real-time conformance run.
const conformanceTTL = 500 * time.Millisecond

// TestConformance runs the locktest suite against a real server. Every leaf
// test gets its own Backend (its own listener); they share one table and
// channel, as processes would, and locktest gives each leaf its own keys.
func TestConformance(t *testing.T) {
	s := pgtest.Start(t)
	pool := s.Pool(t)
	table := randomName("conformance")
	newBackend(t, pool, postgres.WithTable(table)) // creates the table once
	locktest.Run(t, func(t *testing.T) ctxlock.Backend {
		return faulty(t, pool, table)
	}, locktest.WithTTL(conformanceTTL))
}

// faultyBackend adds the locktest fault switches to a real Backend: an
// outage switch (locktest.RelockingOutage: Relock and ReleaseContended
// behind it too) and Evict (the row's lease is forgotten, its token kept, as
// data loss of the lease alone would).
type faultyBackend struct {
	*locktest.RelockingOutage
	pb    *postgres.Backend
	pool  *pgxpool.Pool
	table string
}

func faulty(t *testing.T, pool *pgxpool.Pool, table string) *faultyBackend {
	b := newBackend(t, pool, postgres.WithTable(table), postgres.WithoutCreateTable())
	return &faultyBackend{RelockingOutage: locktest.NewRelockingOutage(b), pb: b, pool: pool, table: table}
}

// Evict frees key's row, keeping its token.
func (f *faultyBackend) Evict(key string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = f.pool.Exec(ctx, "UPDATE "+f.pb.Table()+" SET owner = NULL WHERE key = $1", []byte(key))
}
