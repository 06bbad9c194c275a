package memory

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
)

func TestForgetConcurrent(t *testing.T) {
	b := New()
	defer b.Close()
	ctx := context.Background()
	keys := []string{"a", "b", "c"}
	var mu sync.Mutex
	seen := map[string]map[uint64]bool{}
	for _, k := range keys {
		seen[k] = map[uint64]bool{}
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 2))
			last := map[string]uint64{}
			var leases []ctxlock.Lease
			var stops []func()
			rec := func(l ctxlock.Lease) {
				if l.Token <= last[l.Key] {
					t.Errorf("g%d: token of %q went %d -> %d", g, l.Key, last[l.Key], l.Token)
				}
				last[l.Key] = l.Token
				mu.Lock()
				if seen[l.Key][l.Token] {
					t.Errorf("token %d of %q repeated", l.Token, l.Key)
				}
				seen[l.Key][l.Token] = true
				mu.Unlock()
				leases = append(leases, l)
			}
			for i := range 3000 {
				b.mu.Lock()
				if r.IntN(50) == 0 {
					b.sweepAt = 0
				}
				b.mu.Unlock()
				k := keys[r.IntN(3)]
				req := ctxlock.AcquireRequest{Key: k, Owner: fmt.Sprint(g, "/", i), TTL: time.Duration(1+r.IntN(200)) * time.Microsecond}
				switch r.IntN(7) {
				case 0, 1:
					if l, err := b.Acquire(ctx, req); err == nil {
						rec(l)
					}
				case 2:
					if len(leases) > 0 {
						b.Release(ctx, []ctxlock.Lease{leases[r.IntN(len(leases))]})
					}
				case 3:
					if len(leases) > 0 {
						if l, _, _, err := b.Relock(ctx, leases[r.IntN(len(leases))], req); err == nil && l.Token != 0 {
							rec(l)
						}
					}
				case 4:
					_, stop := b.Watch(k)
					stops = append(stops, stop)
				case 5:
					if len(stops) > 0 {
						j := r.IntN(len(stops))
						stops[j]()
						stops = append(stops[:j], stops[j+1:]...)
					}
				case 6:
					if r.IntN(5) == 0 {
						b.Evict(k)
					} else if len(leases) > 0 {
						b.Extend(ctx, []ctxlock.Lease{leases[r.IntN(len(leases))]}, req.TTL)
					}
				}
			}
			for _, s := range stops {
				s()
			}
		}()
	}
	wg.Wait()
}
