package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/postgres"
	"github.com/ctxlock/ctxlock/internal/benchtest"
	"github.com/ctxlock/ctxlock/internal/pgtest"
)

// BenchmarkLockUnlock locks and unlocks distinct keys from 8 goroutines on
// one Manager over a throwaway server (fsync off): what one process gets
// from the backend's one-statement acquire and batched release.
//
//	go test -run '^$' -bench . -benchtime 3s ./backends/postgres
func BenchmarkLockUnlock(b *testing.B) {
	s := pgtest.Start(b)
	m := ctxlock.NewManager(newBackend(b, s.Pool(b)))
	defer m.Close(context.Background())
	benchtest.LockUnlock(b, m)
}

// BenchmarkContended has 4 Managers (processes, each with its own pool and
// listener) take turns on one key, each hold released at once. It reports
// hand-offs per second (each one a release notification and a waiter's
// acquire) and min/max acquisitions per Manager.
func BenchmarkContended(b *testing.B) {
	s := pgtest.Start(b)
	table := randomName("bench")
	var ms []*ctxlock.Manager
	for range 4 {
		m := ctxlock.NewManager(newBackend(b, s.Pool(b), postgres.WithTable(table)),
			ctxlock.WithDefaultLockOptions(ctxlock.WithAcquireTimeout(time.Second)))
		defer m.Close(context.Background())
		ms = append(ms, m)
	}
	benchtest.Contended(b, ms)
}
