package ctxlock

import (
	"errors"
	"strings"
	"testing"
)

// Do asks why its hold ended; when the Lock value holds the key again by
// then (another goroutine locked it), the reason is unknown (nil), and the
// error must still say the hold ended early, not "%!w(<nil>)".
func TestEndErrorUnknownReason(t *testing.T) {
	err := endError("k", nil)
	if !errors.Is(err, ErrLost) || strings.Contains(err.Error(), "%!") {
		t.Fatalf("endError(nil) = %v; want an error matching ErrLost", err)
	}
	if err := endError("k", ErrUnlocked); err != ErrUnlocked {
		t.Fatalf("endError(ErrUnlocked) = %v", err)
	}
	if err := endError("k", ErrExpired); !errors.Is(err, ErrLost) || !errors.Is(err, ErrExpired) {
		t.Fatalf("endError(ErrExpired) = %v; want ErrLost and ErrExpired", err)
	}
}
