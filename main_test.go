package ctxlock_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/ctxlock/ctxlock/backends/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// scheduledReleases is a memory backend whose releases go through the
// Manager's scheduler, as on a networked backend: a Manager uses in-line
// releases (ctxlock.InstantReleaser) of the memory backend itself only,
// never through a wrapper.
type scheduledReleases struct{ *memory.Backend }
