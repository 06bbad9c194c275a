package ctxlock

import (
	"testing"
	"unsafe"
)

// A held lock costs a hold (with its release embedded), its Lock value and
// its key's state; issue #7 asks for at most 1 KiB per lock, and the hold
// is the largest part. Growing it past the 352-byte size class costs every
// held lock 32 bytes more (BENCHMARKS.md, scenario (c)): do it knowingly.
func TestHoldFitsItsSizeClass(t *testing.T) {
	const sizeClass = 352
	if n := unsafe.Sizeof(hold{}); n > sizeClass {
		t.Errorf("hold is %d bytes, past the %d-byte size class", n, sizeClass)
	}
}
