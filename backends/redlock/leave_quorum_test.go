package redlock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/redlock"
)

// A Leave that fewer than a quorum of nodes answered reports a
// *QuorumError (Op "leave") matching ErrUnavailable, as QuorumError's
// documentation says.
func TestLeaveQuorumError(t *testing.T) {
	c := startNodes(t, 3)
	b := newBackend(t, c.clients)
	c.servers[0].Kill()
	c.servers[1].Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := b.Leave(ctx, uniqueKey("leave"), "w")
	var qe *redlock.QuorumError
	if !errors.As(err, &qe) {
		t.Fatalf("Leave with 2 of 3 nodes down: %v; want a *QuorumError", err)
	}
	if qe.Op != "leave" || qe.OK != 1 || qe.Count(redlock.NodeUnreachable) != 2 {
		t.Errorf("QuorumError %+v; want Op leave, 1 ok, 2 unreachable", qe)
	}
	if !errors.Is(err, ctxlock.ErrUnavailable) {
		t.Errorf("Leave's QuorumError %v does not match ErrUnavailable", err)
	}
}
