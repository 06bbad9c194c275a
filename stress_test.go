package ctxlock_test

import (
	"testing"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
	"github.com/ctxlock/ctxlock/internal/stresstest"
)

// TestStressMemory stresses Managers sharing a memory backend in real time
// (see internal/stresstest): real goroutine interleavings of Lock, TryLock,
// Do, Unlock, Health and Close, each call bounded, holds checked for
// mutual exclusion, keys checked free afterwards.
func TestStressMemory(t *testing.T) {
	stresstest.Run(t, func(t *testing.T) ctxlock.Backend {
		b := memory.New()
		t.Cleanup(func() { _ = b.Close() })
		return b
	}, stresstest.Default)
}
