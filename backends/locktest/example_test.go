package locktest_test

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/locktest"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// A Checker verifies mutual exclusion from the holders' own point of view:
// each goroutine records the span of time it relied on its hold, and the
// Checker finds overlaps and fencing tokens that do not increase. In a test,
// call c.Check(t) instead of Violations.
func ExampleChecker() {
	store := memory.New()
	defer store.Close()

	var c locktest.Checker
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			m := ctxlock.NewManager(store) // one Manager per "process"
			defer m.Close(context.Background())
			l := m.NewLock("shared")
			for range 5 {
				if _, err := l.Lock(context.Background()); err != nil {
					return
				}
				start := time.Now()
				// ... the protected work ...
				c.Record(locktest.Hold{Key: "shared", Owner: fmt.Sprint("process-", i), Token: l.Token(), Start: start, End: time.Now()})
				l.Unlock()
			}
		})
	}
	wg.Wait()
	fmt.Println("holds:", len(c.Holds()), "violations:", len(c.Violations()))
	// Output:
	// holds: 15 violations: 0
}
