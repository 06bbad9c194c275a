// Command basic shows ctxlock on the in-memory backend: three workers in
// three Managers (think: three processes) take turns on one key. It prints
// who holds the lock, who waits, and the fencing token of every hold.
//
//	go run ./examples/basic
package main

import (
	"context"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

func main() {
	store := memory.New() // shared, like a Redis server would be
	defer store.Close()
	ctx := context.Background()
	start := time.Now()
	say := func(format string, args ...any) {
		fmt.Printf("%6.3fs  %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}

	var wg sync.WaitGroup
	for _, name := range []string{"alice", "bob", "carol"} {
		m := ctxlock.NewManager(store)
		defer m.Close(ctx)
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := m.NewLock("invoice-run", ctxlock.WithTTL(2*time.Second))
			for round := 1; round <= 2; round++ {
				say("%-5s waits for invoice-run", name)
				expired, err := l.Lock(ctx)
				if err != nil {
					log.Fatal(err)
				}
				say("%-5s HOLDS invoice-run (fencing token %d)", name, l.Token())
				select {
				case <-time.After(150 * time.Millisecond): // the protected work
				case <-expired:
					say("%-5s lost the lock: %v", name, l.Err())
					continue
				}
				l.Unlock()
				say("%-5s released it", name)
			}
		}()
	}
	wg.Wait()

	// A hold that is not refreshed ends by itself, before the server-side TTL.
	m := ctxlock.NewManager(store)
	defer m.Close(ctx)
	l := m.NewLock("short", ctxlock.WithTTL(500*time.Millisecond), ctxlock.WithoutRefresh())
	expired, err := l.Lock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	say("dave  HOLDS short for at most 500ms without refreshing (token %d)", l.Token())
	<-expired
	say("dave  expiry channel closed: %v", l.Err())
}
