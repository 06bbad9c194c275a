// Command leader runs leader-only work behind TryLock: three instances try
// every tick; the one holding the lock does the work until it steps down or
// loses the lock, and another takes over.
//
//	go run ./examples/leader
package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

func main() {
	store := memory.New()
	defer store.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	say := func(format string, args ...any) {
		fmt.Printf("%6.3fs  %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}

	var wg sync.WaitGroup
	for i, name := range []string{"instance-a", "instance-b", "instance-c"} {
		m := ctxlock.NewManager(store)
		defer m.Close(context.Background())
		wg.Add(1)
		go func() {
			defer wg.Done()
			leader := m.NewLock("scheduler-leader", ctxlock.WithTTL(time.Second))
			tick := time.NewTicker(time.Duration(90+20*i) * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				ok, expired, err := leader.TryLock(ctx)
				if err != nil || !ok {
					continue // someone else leads (or the backend hiccuped): try next tick
				}
				say("%s became leader (token %d)", name, leader.Token())
				lead(ctx, expired, name, say)
				leader.Unlock()
				say("%s stepped down", name)
				// Sit out a while so that another instance takes over: TryLock
				// is not fair, and this instance's next tick (already due) would
				// otherwise take the lock back at once.
				select {
				case <-ctx.Done():
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
		}()
	}
	wg.Wait()
}

// lead does leader-only work for a while, stopping at once if the lock expires.
func lead(ctx context.Context, expired <-chan struct{}, name string, say func(string, ...any)) {
	work := time.NewTicker(100 * time.Millisecond)
	defer work.Stop()
	for n := 1; n <= 3; n++ {
		select {
		case <-expired:
			say("%s lost leadership", name)
			return
		case <-ctx.Done():
			return
		case <-work.C:
			say("%s runs leader-only job #%d", name, n)
		}
	}
}
