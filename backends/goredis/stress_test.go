package goredis_test

import (
	"testing"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/redistest"
	"github.com/ctxlock/ctxlock/internal/stresstest"
)

// TestStressStandalone stresses Managers sharing a goredis Backend on one
// real redis-server in real time (see internal/stresstest): Lock, TryLock,
// Do, Unlock, Health and Close racing on real goroutines, every call
// bounded, holds checked for mutual exclusion, keys free afterwards.
func TestStressStandalone(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	stresstest.Run(t, func(t *testing.T) ctxlock.Backend { return newBackend(t, c) }, stresstest.Default)
}
