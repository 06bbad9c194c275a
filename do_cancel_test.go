package ctxlock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// Do's context is cancelled as the hold ends, not a goroutine switch later:
// once Unlock (or an expiry, a loss, Close) has ended the hold, fn must not
// find its context live, nor Token 0 with it live, or it would go on
// working while another owner may hold the key (the stress test saw fn
// start work under a hold whose successor, token+1, another Manager held).
func TestDoContextCancelledWhenHoldEnds(t *testing.T) {
	b := memory.New()
	defer b.Close()
	m := ctxlock.NewManager(b)
	defer closeManager(t, m)
	l := m.NewLock("k", ctxlock.WithTTL(time.Minute))
	for i := range 200 {
		unlocked := make(chan error)
		err := ctxlock.Do(context.Background(), l, func(fctx context.Context) error {
			go func() { unlocked <- l.Unlock() }() // another goroutine ends the hold
			if err := <-unlocked; err != nil {
				t.Fatalf("Unlock: %v", err)
			}
			if fctx.Err() == nil {
				t.Fatalf("run %d: fn's context still live after Unlock returned (Err %v, Token %d)", i, l.Err(), l.Token())
			}
			if cause := context.Cause(fctx); !errors.Is(cause, ctxlock.ErrUnlocked) {
				t.Fatalf("run %d: cause %v, want ErrUnlocked", i, cause)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Do: %v", err)
		}
	}
}
