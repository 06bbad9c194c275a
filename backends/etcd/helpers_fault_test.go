package etcd_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/etcd"
)

// newManager returns a Manager on b, closed when the test ends (before b,
// whose cleanup was registered first).
func newManager(t *testing.T, b ctxlock.Backend, opts ...ctxlock.ManagerOption) *ctxlock.Manager {
	t.Helper()
	m := ctxlock.NewManager(b, opts...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = m.Close(ctx)
	})
	return m
}

// pollUntil polls external server state until cond holds, failing the test
// after d.
func pollUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond) // polling the server
	}
}

// watchInForce reports whether b's Health answers and reports no watch
// condition: the prefix watch is (re)established.
func watchInForce(t *testing.T, b *etcd.Backend) bool {
	conds, err := b.Health(testCtx(t, 5*time.Second))
	if err != nil {
		return false
	}
	for _, c := range conds {
		if strings.Contains(c, "watch") {
			return false
		}
	}
	return true
}
