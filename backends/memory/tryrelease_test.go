package memory_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

var _ ctxlock.InstantReleaser = (*memory.Backend)(nil)

// TryRelease releases at once, owner-checked, and reports contention; it
// does nothing, and says so, while the store is slow, unavailable or
// closed.
func TestTryRelease(t *testing.T) {
	ctx := context.Background()
	b := memory.New()
	acquire := func(owner string) ctxlock.Lease {
		t.Helper()
		l, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: "k", Owner: owner, TTL: time.Hour, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	held := func() string {
		owner, _, _, _, ok := b.Holder("k")
		if !ok {
			return ""
		}
		return owner
	}

	a := acquire("a")
	if released, wanted := b.TryRelease(ctxlock.Lease{Key: "k", Owner: "x", Token: a.Token}); !released || wanted {
		t.Errorf("TryRelease of a lease not owned = %v, %v; want true (nothing to do), false", released, wanted)
	}
	if h := held(); h != "a" {
		t.Fatalf("another owner's TryRelease freed the key: holder %q", h)
	}
	if _, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: "k", Owner: "b", TTL: time.Hour, Timeout: time.Second}); !errors.Is(err, ctxlock.ErrHeld) {
		t.Fatalf("Acquire of a held key: %v, want ErrHeld", err)
	}
	for _, c := range []struct {
		name string
		set  func(bool)
	}{
		{"slow", func(on bool) {
			if on {
				b.SetLatency(time.Millisecond)
			} else {
				b.SetLatency(0)
			}
		}},
		{"unavailable", b.SetUnavailable},
	} {
		c.set(true)
		if released, _ := b.TryRelease(a); released {
			t.Errorf("%s store: TryRelease reported true", c.name)
		}
		c.set(false)
		if h := held(); h != "a" {
			t.Fatalf("%s store: TryRelease that reported false freed the key", c.name)
		}
	}
	if released, wanted := b.TryRelease(a); !released || !wanted {
		t.Errorf("TryRelease of a contended lease = %v, %v; want true, true", released, wanted)
	}
	if h := held(); h != "" {
		t.Fatalf("key still held by %q after TryRelease", h)
	}
	a = acquire("a")
	if released, wanted := b.TryRelease(a); !released || wanted {
		t.Errorf("TryRelease of an uncontended lease = %v, %v; want true, false", released, wanted)
	}
	a = acquire("a")
	b.Close()
	if released, _ := b.TryRelease(a); released {
		t.Error("TryRelease on a closed store reported true")
	}
}
