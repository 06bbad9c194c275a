package redlock_test

import (
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/locktest"
)

// TestConformance runs the whole locktest suite on five real nodes.
func TestConformance(t *testing.T) {
	c := startNodes(t, 5)
	locktest.Run(t, func(t *testing.T) ctxlock.Backend {
		// Each leaf test gets a new Backend (its own subscriptions).
		b := newBackend(t, c.clients)
		return &faultyBackend{RelockingOutage: locktest.NewRelockingOutage(b), rb: b, clients: c.clients}
	}, locktest.WithTTL(time.Second))
}
