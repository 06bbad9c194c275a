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
			fmt.Println("hold ended, expired:", errors.Is(l.Err(), ctxlock.ErrExpired))
			store.SetUnavailable(false)
			return
		case <-ticks.C:
			// do a slice of the protected work
		}
	}
	// Output:
	// hold ended, expired: true
}

// Leader-only work behind TryLock: every instance tries; the one that gets
// the lock leads, and stops leading the moment its expiry channel closes.
// Followers try again on their own schedule.
func ExampleLock_TryLock() {
	store := memory.New()
	ctx := context.Background()
	locks := map[string]ctxlock.Lock{}
	var (
		leader  string
		leading <-chan struct{}
	)
	for _, name := range []string{"instance-a", "instance-b", "instance-c"} {
		m := ctxlock.NewManager(store)
		defer m.Close(ctx)
		l := m.NewLock("leader", ctxlock.WithTTL(300*time.Millisecond))
		locks[name] = l
		ok, expired, err := l.TryLock(ctx)
		switch {
		case err != nil:
			fmt.Println(name, "error:", err)
		case ok:
			fmt.Println(name, "leads")
			leader, leading = name, expired
		default:
			fmt.Println(name, "follows")
		}
	}

	// An operator deletes the key: the leader's next refresh finds it gone.
	store.Evict("leader")

	// The leader works in steps, checking its expiry channel between them.
	step := time.NewTicker(10 * time.Millisecond)
	defer step.Stop()
	for done := false; !done; {
		select {
		case <-leading:
			fmt.Println(leader, "stops leading, lost:", errors.Is(locks[leader].Err(), ctxlock.ErrLost))
			done = true
		case <-step.C:
			// one step of leader-only work
		}
	}

	// The next follower to try leads.
	if ok, _, err := locks["instance-b"].TryLock(ctx); ok && err == nil {
		fmt.Println("instance-b leads")
	}
	// Output:
	// instance-a leads
	// instance-b follows
	// instance-c follows
	// instance-a stops leading, lost: true
	// instance-b leads
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

// When the hold is lost, Do cancels fn's context with the loss as its cause,
// and returns an error wrapping ErrLost.
func ExampleDo_lost() {
	store := memory.New()
	m := ctxlock.NewManager(store)
	defer m.Close(context.Background())

	l := m.NewLock("nightly-report", ctxlock.WithTTL(300*time.Millisecond))
	err := ctxlock.Do(context.Background(), l, func(ctx context.Context) error {
		// An operator deletes the key: the next refresh finds it gone.
		store.Evict("nightly-report")
		<-ctx.Done() // a long job checks its context between steps
		fmt.Println("fn stopped, cause lost:", errors.Is(context.Cause(ctx), ctxlock.ErrLost))
		return ctx.Err()
	})
	fmt.Println("Do returned lost:", errors.Is(err, ctxlock.ErrLost))
	// Output:
	// fn stopped, cause lost: true
	// Do returned lost: true
}
