package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/ctxlock/ctxlock/backends/postgres"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// randomName returns prefix followed by a random suffix: a table or channel
// of its own for a test.
func randomName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}

// newBackend returns a Backend on pool with a table of its own (unless
// opts name one), closed when the test ends.
func newBackend(t testing.TB, pool *pgxpool.Pool, opts ...postgres.Option) *postgres.Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := postgres.New(ctx, pool, opts...)
	if err != nil {
		t.Fatalf("postgres.New: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// testCtx returns a context bounded by d, cancelled when the test ends.
func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
