package etcd_test

import (
	"context"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/benchtest"
)

// BenchmarkLockUnlock locks and unlocks distinct keys from 8 goroutines on
// one Manager over a throwaway member (data on /dev/shm): what one process
// gets from the backend's grant-and-transaction acquire and revoking
// release.
//
//	cd backends/etcd && go test -run '^$' -bench . -benchtime 3s
func BenchmarkLockUnlock(b *testing.B) {
	_, client := start(b)
	m := ctxlock.NewManager(newBackend(b, client))
	defer m.Close(context.Background())
	benchtest.LockUnlock(b, m)
}

// BenchmarkContended has 4 Managers (processes, each with its own client and
// watch) take turns on one key, each hold released at once. It reports
// hand-offs per second (each one a deletion seen by the watch and a
// waiter's acquire) and min/max acquisitions per Manager.
func BenchmarkContended(b *testing.B) {
	s, _ := start(b)
	var ms []*ctxlock.Manager
	for range 4 {
		m := ctxlock.NewManager(newBackend(b, newClient(b, s.Addr())),
			ctxlock.WithDefaultLockOptions(ctxlock.WithAcquireTimeout(time.Second)))
		defer m.Close(context.Background())
		ms = append(ms, m)
	}
	benchtest.Contended(b, ms)
}
