package ctxlock_test

import (
	"context"
	"errors"
	"testing"

	"github.com/ctxlock/ctxlock"
)

// A Manager not made by NewManager must fail as one with a nil Backend does,
// not panic on its nil map and channels.
func TestZeroManagerActsAsNilBackend(t *testing.T) {
	ctx := context.Background()
	var m ctxlock.Manager
	l := m.NewLock("k")
	if _, err := l.Lock(ctx); !errors.Is(err, ctxlock.ErrNilBackend) {
		t.Errorf("Lock: %v; want ErrNilBackend", err)
	}
	if ok, exp, err := l.TryLock(ctx); ok || exp != nil || !errors.Is(err, ctxlock.ErrNilBackend) {
		t.Errorf("TryLock: (%v, %v, %v); want ErrNilBackend", ok, exp, err)
	}
	if err := ctxlock.Do(ctx, l, func(context.Context) error { return nil }); !errors.Is(err, ctxlock.ErrNilBackend) {
		t.Errorf("Do: %v; want ErrNilBackend", err)
	}
	if err := l.Unlock(); !errors.Is(err, ctxlock.ErrNotHeld) {
		t.Errorf("Unlock: %v; want ErrNotHeld", err)
	}
	if l.Token() != 0 || l.Err() != nil {
		t.Errorf("Token %d, Err %v; want 0, nil", l.Token(), l.Err())
	}
	if _, err := m.Health(ctx); !errors.Is(err, ctxlock.ErrNilBackend) {
		t.Errorf("Health: %v; want ErrNilBackend", err)
	}
	for range 2 {
		if err := m.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	var nilCtx context.Context
	if err := m.Close(nilCtx); !errors.Is(err, ctxlock.ErrNilContext) {
		t.Errorf("Close(nil): %v; want ErrNilContext", err)
	}
}
