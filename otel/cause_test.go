package ctxlockotel

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

type typedCause struct{}

func (typedCause) Error() string     { return "shutting down" }
func (typedCause) ErrorType() string { return "app.shutdown" }

type typedFault struct{}

func (typedFault) Error() string     { return "db timed out" }
func (typedFault) ErrorType() string { return "db.timeout" }

// The cause a caller cancelled its context with is not a fault of the call
// (a Lock inside Do, whose context ends with the loss of the outer lock);
// a backend fault joined to the cancellation still is, and names error.type.
func TestClassifyCanceledIgnoresContextCause(t *testing.T) {
	lost := errors.New("ctxlock: lock lost")
	unavailable := errors.New("ctxlock: backend unavailable")
	withCause := func(cause error) error {
		return fmt.Errorf("ctxlock: lock %q: %w", "k", fmt.Errorf("%w: %w", context.Canceled, cause))
	}
	joined := func(cause, fault error) error {
		return fmt.Errorf("ctxlock: lock %q: %w", "k", errors.Join(
			fmt.Errorf("%w: %w", context.DeadlineExceeded, cause),
			fmt.Errorf("last backend fault: %w", fault)))
	}
	for _, c := range []struct {
		name   string
		err    error
		failed bool
		etype  string
	}{
		{"ctxlock cause", withCause(fmt.Errorf("hold ended early: %w", lost)), false, ""},
		{"typed cause", withCause(typedCause{}), false, ""},
		{"fault and ctxlock cause", joined(lost, fmt.Errorf("%w: %w", unavailable, context.DeadlineExceeded)), true, "ctxlock.backend_unavailable"},
		{"fault and typed cause", joined(typedCause{}, fmt.Errorf("%w: dial", unavailable)), true, "ctxlock.backend_unavailable"},
		// A fault with its own ErrorType names error.type, ahead of the
		// ctxlock sentinel it is wrapped with, and not the typed cause.
		{"typed fault and typed cause", joined(typedCause{}, fmt.Errorf("%w: %w", unavailable, typedFault{})), true, "db.timeout"},
		{"typed fault alone", fmt.Errorf("ctxlock: lock %q: %w", "k", errors.Join(context.Canceled, typedFault{})), true, "db.timeout"},
	} {
		failed, etype := classify(OutcomeCanceled, c.err)
		if failed != c.failed || etype != c.etype {
			t.Errorf("%s: classify = %v, %q; want %v, %q", c.name, failed, etype, c.failed, c.etype)
		}
	}
	// Outside a cancellation, ErrorType still sees every error in the tree.
	if got := ErrorType(withCause(typedCause{})); got != "app.shutdown" {
		t.Errorf("ErrorType = %q, want app.shutdown", got)
	}
}
