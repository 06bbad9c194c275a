package redlock_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
)

// With a minority of nodes frozen (SIGSTOP), Health with a ctx deadline
// reports the frozen node by address, and no error, by the deadline: the
// per-node checks used to run until ctx's deadline itself, so the tally
// came just after ctx had ended, and a Manager (which returns when ctx
// ends) reported the whole backend unanswered, an error. With a majority
// frozen it is an error, and once they are back the conditions clear.
func TestHealthFrozenMinorityWithinDeadline(t *testing.T) {
	c := startNodes(t, 3)
	b := newBackend(t, c.clients)
	m := ctxlock.NewManager(b)
	defer m.Close(context.Background())
	health := func() ([]string, time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		conds, err := m.Health(ctx)
		return conds, time.Since(start), err
	}
	c.servers[0].Stop()
	defer c.servers[0].Cont()
	conds, took, err := health()
	if err != nil || !strings.Contains(strings.Join(conds, "\n"), c.servers[0].Addr()) {
		t.Errorf("Health with 1 of 3 frozen: %q, %v; want a condition naming %s and no error", conds, err, c.servers[0].Addr())
	}
	// A Health that ignored ctx would wait for the frozen node's read
	// timeout (1s, redistest.ClientOptions); the slack over ctx's 300ms is
	// for a loaded machine (500ms failed once with three helpers running).
	if took > 900*time.Millisecond {
		t.Errorf("Health took %v; want it by ctx's deadline (300ms), not the frozen node's 1s read timeout", took)
	}
	c.servers[1].Stop()
	defer c.servers[1].Cont()
	if conds, _, err := health(); !errors.Is(err, ctxlock.ErrUnavailable) {
		t.Errorf("Health with 2 of 3 frozen: %q, %v; want an error matching ErrUnavailable", conds, err)
	}
	c.servers[0].Cont()
	c.servers[1].Cont()
	if conds, err := m.Health(context.Background()); err != nil || len(conds) != 0 {
		t.Errorf("Health after recovery: %q, %v; want none", conds, err)
	}
}
