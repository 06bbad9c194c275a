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

// Do unlocks its own hold only (ctxlock.UnlockHold): once that hold has
// ended and another goroutine locked the same value again, Do's Unlock,
// which ends whatever hold the value has, would end that goroutine's hold.
func TestDoUnlocksOnlyItsOwnHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := ctxlock.NewManager(memory.New())
		defer closeManager(t, m)
		l := m.NewLock("k", ctxlock.WithTTL(time.Second), ctxlock.WithoutRefresh())
		first, err := l.Lock(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second) // the first hold expires
		<-first
		second, err := l.Lock(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if ctxlock.UnlockHold(l, first) {
			t.Fatal("UnlockHold of the ended first hold reported an unlock")
		}
		select {
		case <-second:
			t.Fatalf("the second hold ended when the first one was unlocked: %v", l.Err())
		default:
		}
		if !ctxlock.UnlockHold(l, second) {
			t.Fatal("UnlockHold of the current hold did not unlock it")
		}
		<-second
		if !errors.Is(l.Err(), ctxlock.ErrUnlocked) {
			t.Fatalf("Err after UnlockHold = %v, want ErrUnlocked", l.Err())
		}
	})
}
