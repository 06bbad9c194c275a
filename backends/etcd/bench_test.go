package etcd_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/benchtest"
	"github.com/ctxlock/ctxlock/internal/etcdtest"
	"github.com/ctxlock/ctxlock/internal/faultproxy"
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

// BenchmarkExtend1024 renews 1,024 leases of one Backend in one Extend
// call, the largest batch the Manager's scheduler sends: keep-alives on
// the Backend's streams and the ownership reads (8 transactions of 128
// keys), in parallel. "rtt=20ms" puts a fault proxy that delays each
// direction by 10ms between the client and the member, as a cluster in
// another zone would be.
//
//	cd backends/etcd && go test -run '^$' -bench Extend1024 -benchtime 100x
func BenchmarkExtend1024(b *testing.B) {
	for _, oneWay := range []time.Duration{0, 10 * time.Millisecond} {
		b.Run(fmt.Sprintf("rtt=%v", 2*oneWay), func(b *testing.B) {
			s := etcdtest.Start(b)
			addr := s.Addr()
			if oneWay > 0 {
				proxy := faultproxy.Start(b, addr)
				proxy.Delay(oneWay, oneWay)
				addr = proxy.Addr()
			}
			backend := newBackend(b, newClient(b, addr))
			ctx := context.Background()
			leases := make([]ctxlock.Lease, 1024)
			var g errgroup.Group
			g.SetLimit(64)
			for i := range leases {
				g.Go(func() error {
					l, err := backend.Acquire(ctx, ctxlock.AcquireRequest{Key: fmt.Sprintf("k%d", i), Owner: fmt.Sprintf("owner-%d", i), TTL: time.Minute})
					leases[i] = l
					return err
				})
			}
			if err := g.Wait(); err != nil {
				b.Fatal(err)
			}
			defer backend.Release(ctx, leases)
			b.ResetTimer()
			for range b.N {
				for i, err := range backend.Extend(ctx, leases, time.Minute) {
					if err != nil {
						b.Fatalf("lease %d: %v", i, err)
					}
				}
			}
		})
	}
}
