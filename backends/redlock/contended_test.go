package redlock_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/redlock"
)

// TestReleaseContended: a release reports contention once another owner was
// refused while the lease held the key, and not before.
func TestReleaseContended(t *testing.T) {
	c := startNodes(t, 5)
	ctx := context.Background()
	key := uniqueKey("k")
	b := newBackend(t, c.clients)
	acquireSettled := func() ctxlock.Lease {
		t.Helper()
		var l ctxlock.Lease
		settled(t, c.clients, func(b *redlock.Backend) {
			var err error
			if l, err = b.Acquire(ctx, lockReq(key)); err != nil {
				t.Fatalf("Acquire: %v", err)
			}
		})
		return l
	}

	l := acquireSettled()
	errs, contended := b.ReleaseContended(ctx, []ctxlock.Lease{l})
	if errors.Join(errs...) != nil || slices.Contains(contended, true) {
		t.Fatalf("uncontended ReleaseContended: %v, %v; want no errors, no contention", errs, contended)
	}

	l = acquireSettled()
	if _, err := b.Acquire(ctx, lockReq(key)); !errors.Is(err, ctxlock.ErrHeld) {
		t.Fatalf("Acquire of a held key: %v; want ErrHeld", err)
	}
	none := ctxlock.Lease{Key: uniqueKey("none"), Owner: owner()}
	errs, contended = b.ReleaseContended(ctx, []ctxlock.Lease{l, none})
	if errors.Join(errs...) != nil || !slices.Equal(contended, []bool{true, false}) {
		t.Fatalf("ReleaseContended after a refusal: %v, %v; want no errors, [true false]", errs, contended)
	}
}
