package redlock_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/redlock"
)

// Calls made while Close runs either finish first or fail with ErrClosed
// (never start node calls Close no longer waits for, which would race its
// wait); every call after Close fails with ErrClosed, and no lease is left
// on the nodes by a call Close let finish and release.
func TestCallsAroundClose(t *testing.T) {
	c := startNodes(t, 3)
	b := newBackend(t, c.clients)
	ctx := context.Background()

	stop := make(chan struct{})
	running := make(chan struct{}, 4) // each goroutine's first call is done
	var wg sync.WaitGroup
	var mu sync.Mutex
	var unexpected []error
	for g := range 4 {
		wg.Go(func() {
			key := uniqueKey("around-close")
			for i := 0; ; i++ {
				if i == 1 {
					running <- struct{}{}
				}
				select {
				case <-stop:
					return
				default:
				}
				var err error
				switch (g + i) % 3 {
				case 0:
					var lease ctxlock.Lease
					if lease, err = b.Acquire(ctx, lockReq(key)); err == nil {
						err = b.Release(ctx, []ctxlock.Lease{lease})[0]
					}
				case 1:
					_, err = b.Health(ctx)
				case 2:
					_, stopWatch := b.Watch(key)
					stopWatch()
				}
				if err != nil && !errors.Is(err, redlock.ErrClosed) {
					mu.Lock()
					unexpected = append(unexpected, err)
					mu.Unlock()
				}
			}
		})
	}
	for range 4 {
		<-running
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	for _, err := range unexpected {
		t.Errorf("call around Close: %v, want nil or ErrClosed", err)
	}

	lease := ctxlock.Lease{Key: uniqueKey("after-close"), Owner: owner(), Token: 1}
	if _, err := b.Acquire(ctx, lockReq(lease.Key)); !errors.Is(err, redlock.ErrClosed) {
		t.Errorf("Acquire after Close: %v, want ErrClosed", err)
	}
	if _, _, _, err := b.Relock(ctx, lease, lockReq(lease.Key)); !errors.Is(err, redlock.ErrClosed) {
		t.Errorf("Relock after Close: %v, want ErrClosed", err)
	}
	if errs := b.Extend(ctx, []ctxlock.Lease{lease}, time.Second); !errors.Is(errs[0], redlock.ErrClosed) {
		t.Errorf("Extend after Close: %v, want ErrClosed", errs[0])
	}
	if errs := b.Release(ctx, []ctxlock.Lease{lease}); !errors.Is(errs[0], redlock.ErrClosed) {
		t.Errorf("Release after Close: %v, want ErrClosed", errs[0])
	}
	if err := b.Leave(ctx, lease.Key, "w"); !errors.Is(err, redlock.ErrClosed) {
		t.Errorf("Leave after Close: %v, want ErrClosed", err)
	}
	if _, err := b.Health(ctx); !errors.Is(err, redlock.ErrClosed) {
		t.Errorf("Health after Close: %v, want ErrClosed", err)
	}
	if ch, stop := b.Watch(lease.Key); ch != nil {
		t.Error("Watch after Close returned a channel")
	} else {
		stop()
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
