package redlock_test

import (
	"fmt"
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

// TestConformanceNodeCounts runs the suite on one node (quorum 1) and on an
// even number of nodes (4, quorum 3).
func TestConformanceNodeCounts(t *testing.T) {
	for _, n := range []int{1, 4} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			c := startNodes(t, n)
			locktest.Run(t, func(t *testing.T) ctxlock.Backend {
				b := newBackend(t, c.clients)
				if b.Quorum() != n/2+1 {
					t.Fatalf("Quorum of %d nodes: %d", n, b.Quorum())
				}
				return &faultyBackend{RelockingOutage: locktest.NewRelockingOutage(b), rb: b, clients: c.clients}
			}, locktest.WithTTL(time.Second))
		})
	}
}
