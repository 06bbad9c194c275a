package redlock

import (
	"fmt"
	"strings"
	"time"

	"github.com/ctxlock/ctxlock"
)

// NodeStatus is what one node did in one operation.
type NodeStatus int

const (
	// NodeOK: the node granted, extended or released the lease.
	NodeOK NodeStatus = iota
	// NodeTaken: the key is held by another owner (Acquire), kept free for
	// owners waiting for it (a Relock that yielded), or the lease is no
	// longer owned on this node (Extend). Cf. redsync's ErrNodeTaken.
	NodeTaken
	// NodeUnreachable: a transient fault (unreachable, timed out, LOADING,
	// ...): the node's outcome is unknown. Cf. redsync's RedisError.
	NodeUnreachable
	// NodeFailed: a permanent error from the node (WRONGTYPE, ACL, an
	// unexpected reply, a closed client, bad input).
	NodeFailed
)

// String returns "ok", "taken", "unreachable" or "failed".
func (s NodeStatus) String() string {
	switch s {
	case NodeOK:
		return "ok"
	case NodeTaken:
		return "taken"
	case NodeUnreachable:
		return "unreachable"
	case NodeFailed:
		return "failed"
	}
	return fmt.Sprintf("NodeStatus(%d)", int(s))
}

// NodeError is one node's part in an operation that did not succeed
// there. QuorumError lists them.
type NodeError struct {
	Node   int        // index of the node in the clients passed to New
	Addr   string     // the node's address, as its client reports it
	Status NodeStatus // NodeTaken, NodeUnreachable or NodeFailed
	// Remaining is, for NodeTaken in Acquire, the holder's remaining TTL on
	// this node (0 when unknown).
	Remaining time.Duration
	Err       error // what the node's backend returned
}

// Error describes the node and its error.
func (e *NodeError) Error() string {
	return fmt.Sprintf("node %d (%s) %s: %v", e.Node, e.Addr, e.Status, e.Err)
}

// Unwrap returns the node's error: errors.Is(nodeErr, ctxlock.ErrUnavailable)
// holds for NodeUnreachable, ctxlock.ErrHeld for NodeTaken in Acquire.
func (e *NodeError) Unwrap() error { return e.Err }

// QuorumError reports an operation that did not reach a quorum of nodes,
// with what every other node did. Get it with errors.As from the errors of
// Acquire, Relock, Extend, Release, Leave and Health, and from the errors a
// Manager's Lock returns (joined in as the last backend fault).
//
// It matches ctxlock.ErrUnavailable with errors.Is exactly when the quorum
// was missed because of nodes whose outcome is unknown (unreachable, timed
// out) or because the acquisition took longer than its validity window —
// faults a retry may cure. A quorum missed because other owners hold the key
// is reported as a *ctxlock.HeldError wrapping the QuorumError; a lease that
// a quorum no longer confirms, as ctxlock.ErrLost wrapping it.
//
// QuorumError deliberately does not unwrap to the node errors (errors.Is on
// it would then match ErrUnavailable when a single node was down but the
// quorum was missed for another reason): read Failures instead.
type QuorumError struct {
	Op     string // "acquire", "relock", "extend", "release", "leave" or "health"
	Key    string // the lock key ("" for health)
	Nodes  int    // number of nodes
	Quorum int    // nodes needed: Nodes/2 + 1
	OK     int    // nodes that granted, extended, released or answered
	// Validity is set for an acquire (or relock) that a quorum granted too
	// slowly: the validity left (≤ 0) when the last reply came.
	Validity time.Duration
	// Failures lists every node that did not succeed, by node index.
	Failures []*NodeError

	transient bool
}

// Error summarises the counts and every node's failure.
func (e *QuorumError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "redlock: %s", e.Op)
	if e.Key != "" {
		fmt.Fprintf(&b, " %q", e.Key)
	}
	if e.OK >= e.Quorum && (e.Op == "acquire" || e.Op == "relock") {
		fmt.Fprintf(&b, ": granted by %d of %d nodes but validity window passed (%v left)", e.OK, e.Nodes, e.Validity)
	} else {
		fmt.Fprintf(&b, ": quorum %d of %d not reached: %d ok", e.Quorum, e.Nodes, e.OK)
		for _, s := range []NodeStatus{NodeTaken, NodeUnreachable, NodeFailed} {
			if c := e.Count(s); c > 0 {
				fmt.Fprintf(&b, ", %d %s", c, s)
			}
		}
	}
	for i, f := range e.Failures {
		if i == 0 {
			b.WriteString(" [")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(f.Error())
	}
	if len(e.Failures) > 0 {
		b.WriteString("]")
	}
	return b.String()
}

// Is reports whether target is ctxlock.ErrUnavailable and the quorum was
// missed for a reason a retry may cure (see Transient).
func (e *QuorumError) Is(target error) bool {
	return target == ctxlock.ErrUnavailable && e.transient
}

// Transient reports whether unreachable nodes or a slow acquisition, rather
// than other owners or permanent errors, kept the operation from a quorum.
func (e *QuorumError) Transient() bool { return e.transient }

// Count returns how many nodes ended with status s.
func (e *QuorumError) Count(s NodeStatus) int {
	if s == NodeOK {
		return e.OK
	}
	n := 0
	for _, f := range e.Failures {
		if f.Status == s {
			n++
		}
	}
	return n
}
