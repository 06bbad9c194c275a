package ctxlock_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/ctxlock/ctxlock/backends/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// scheduledReleases is a memory backend whose releases go through the
// Manager's scheduler, as on a networked backend: its TryRelease, of
// another signature, hides the memory backend's ctxlock.InstantReleaser.
type scheduledReleases struct{ *memory.Backend }

func (scheduledReleases) TryRelease() {}
