package goredis_test

import (
	"testing"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
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

// TestStressCluster is TestStressStandalone on a Redis Cluster of three
// masters, the keys spread over them. The cases after the first add
// goredis.WithWaiterHints (the queue the redlock package uses) and a key
// prefix.
func TestStressCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	c := cl.Client(t)
	n := 0
	stresstest.Run(t, func(t *testing.T) ctxlock.Backend {
		n++
		if n == 1 {
			return newBackend(t, c)
		}
		return newBackend(t, c, goredis.WithWaiterHints(0), goredis.WithKeyPrefix("stress:"))
	}, stresstest.Default)
}
