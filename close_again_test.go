package ctxlock_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// Close: "Calling Close again waits for the first Close" — or, like the
// first Close, only until its own ctx ends: it then returns ctx's error.
func TestCloseAgainReturnsWhenCtxEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := memory.New()
		defer b.Close()
		m := ctxlock.NewManager(b)
		l := m.NewLock("k", ctxlock.WithTTL(time.Minute))
		if _, err := l.Lock(context.Background()); err != nil {
			t.Fatal(err)
		}
		b.SetUnavailable(true) // the release stays pending: the first Close waits
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
		first := make(chan error, 1)
		go func() { first <- m.Close(context.Background()) }()
		synctest.Wait() // the first Close waits for the release

		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := m.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("second Close while the first waits, ctx ended: %v; want DeadlineExceeded", err)
		}
		b.SetUnavailable(false)
		if err := <-first; err != nil {
			t.Errorf("first Close: %v", err)
		}
		if err := m.Close(context.Background()); err != nil {
			t.Errorf("Close after Close returned: %v; want nil", err)
		}
	})
}
