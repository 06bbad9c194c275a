package memory_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// Managers that share one Backend contend as processes sharing a server
// would: here "host-a" holds the key, so "host-b" is refused until host-a's
// Manager has released it.
func Example() {
	ctx := context.Background()
	store := memory.New()
	defer store.Close() // after the Managers

	hostA := ctxlock.NewManager(store)
	hostB := ctxlock.NewManager(store)
	defer hostB.Close(ctx)

	report := hostA.NewLock("report", ctxlock.WithMetadata("host-a"))
	if _, err := report.Lock(ctx); err != nil {
		fmt.Println(err)
		return
	}
	_, metadata, token, _, _ := store.Holder("report")
	fmt.Println("held by", metadata, "with token", token)

	ok, _, err := hostB.NewLock("report").TryLock(ctx)
	fmt.Println("host-b got it:", ok, err)

	report.Unlock()
	hostA.Close(ctx) // waits for the release that Unlock queued

	other := hostB.NewLock("report")
	ok, _, err = other.TryLock(ctx)
	fmt.Println("host-b got it:", ok, err, "token", other.Token())
	other.Unlock()
	// Output:
	// held by host-a with token 1
	// host-b got it: false <nil>
	// host-b got it: true <nil> token 2
}

// Evict simulates data loss on the server: the holder learns at its next
// refresh that the hold is gone, and its expiry channel closes with ErrLost.
func ExampleBackend_Evict() {
	store := memory.New()
	defer store.Close()
	m := ctxlock.NewManager(store)
	defer m.Close(context.Background())

	l := m.NewLock("billing", ctxlock.WithTTL(300*time.Millisecond)) // refreshed every 100ms
	expired, err := l.Lock(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	store.Evict("billing")
	<-expired
	fmt.Println("lost:", errors.Is(l.Err(), ctxlock.ErrLost))
	// Output:
	// lost: true
}
