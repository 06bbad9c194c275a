package ctxlock_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// A lock protects work; the work stops when the expiry channel closes.
func Example() {
	m := ctxlock.NewManager(memory.New())
	defer m.Close(context.Background())

	l := m.NewLock("orders/42", ctxlock.WithTTL(10*time.Second))
	expired, err := l.Lock(context.Background())
	if err != nil {
		fmt.Println("lock:", err)
		return
	}
	fmt.Println("holding", l.Key(), "with fencing token", l.Token())

	l.Unlock()
	<-expired
	fmt.Println("released:", errors.Is(l.Err(), ctxlock.ErrUnlocked))
	// Output:
	// holding orders/42 with fencing token 1
	// released: true
}

// A service loop selects on the expiry channel next to its other work, and
// stops touching the resource the moment the hold is gone.
func ExampleLock_expiry() {
	store := memory.New()
	m := ctxlock.NewManager(store)
	defer m.Close(context.Background())

	l := m.NewLock("billing", ctxlock.WithTTL(time.Second))
	expired, err := l.Lock(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	store.SetUnavailable(true) // the backend goes away: refreshes fail

	ticks := time.NewTicker(100 * time.Millisecond)
	defer ticks.Stop()
	for {
		select {
		case <-expired:
			fmt.Println("lock lost, stopping:", errors.Is(l.Err(), ctxlock.ErrExpired))
			store.SetUnavailable(false)
			return
		case <-ticks.C:
			// do a slice of the protected work
		}
	}
	// Output:
	// lock lost, stopping: true
}

// Leader-only work behind TryLock: every instance tries; the one that gets
// the lock leads until its expiry channel closes.
func ExampleLock_TryLock() {
	store := memory.New()
	ctx := context.Background()
	for _, name := range []string{"instance-a", "instance-b", "instance-c"} {
		m := ctxlock.NewManager(store)
		defer m.Close(ctx)
		leader := m.NewLock("leader")
		ok, _, err := leader.TryLock(ctx)
		switch {
		case err != nil:
			fmt.Println(name, "error:", err)
		case ok:
			fmt.Println(name, "leads")
		default:
			fmt.Println(name, "follows")
		}
	}
	// Output:
	// instance-a leads
	// instance-b follows
	// instance-c follows
}

// Do runs a function under a lock and unlocks afterwards; the function's
// context is cancelled if the hold is lost.
func ExampleDo() {
	m := ctxlock.NewManager(memory.New())
	defer m.Close(context.Background())

	l := m.NewLock("nightly-report")
	err := ctxlock.Do(context.Background(), l, func(ctx context.Context) error {
		fmt.Println("generating report with token", l.Token())
		return nil
	})
	fmt.Println("done:", err)
	// Output:
	// generating report with token 1
	// done: <nil>
}
