package redlock

import (
	"slices"
	"time"
)

// validityMargin is the fixed part of the drift allowance (Redlock's "+2ms"
// for the granularity of the servers' clocks).
const validityMargin = 2 * time.Millisecond

// Quorum returns the number of nodes that must agree among n: n/2 + 1.
func Quorum(n int) int { return n/2 + 1 }

// Validity returns how long a hold remains valid after an acquisition of a
// lease of ttl that took elapsed (measured on the monotonic clock from
// before the first request to after the last reply): ttl − elapsed − drift,
// where drift = ttl×driftFactor + 2ms. The hold is granted only when the
// result is positive.
func Validity(ttl, elapsed time.Duration, driftFactor float64) time.Duration {
	drift := time.Duration(float64(ttl)*driftFactor) + validityMargin
	return ttl - elapsed - drift
}

// tally counts the outcomes of one operation on every node.
type tally struct {
	n, quorum                      int
	ok, taken, unreachable, failed int
}

func newTally(statuses []NodeStatus) tally {
	t := tally{n: len(statuses), quorum: Quorum(len(statuses))}
	for _, s := range statuses {
		switch s {
		case NodeOK:
			t.ok++
		case NodeTaken:
			t.taken++
		case NodeUnreachable:
			t.unreachable++
		default:
			t.failed++
		}
	}
	return t
}

// verdict says why an operation did or did not reach its quorum.
type verdict int

const (
	reached    verdict = iota // ok ≥ quorum
	byHolders                 // the taken (or not-owned) nodes alone make a quorum impossible
	byFailures                // the permanently failing nodes alone make it impossible
	byOutage                  // unreachable nodes (maybe with others) kept it from a quorum: transient
)

// verdict classifies t. A quorum missed because of holders is final for this
// attempt (the key is held / the lease is lost); one missed because of
// permanent errors is an error; any other miss involves nodes whose answer
// is unknown, so a retry may succeed.
func (t tally) verdict() verdict {
	switch {
	case t.ok >= t.quorum:
		return reached
	case t.n-t.taken < t.quorum:
		return byHolders
	case t.n-t.failed < t.quorum:
		return byFailures
	case t.ok+t.unreachable < t.quorum:
		// Neither holders nor failures alone, but together they leave too
		// few nodes: nothing a retry of the unreachable ones could fix.
		if t.taken >= t.failed {
			return byHolders
		}
		return byFailures
	default:
		return byOutage
	}
}

// maxToken returns the fencing token of a hold granted by the nodes that
// issued tokens: the largest of them.
func maxToken(tokens []uint64) uint64 {
	var m uint64
	for _, t := range tokens {
		m = max(m, t)
	}
	return m
}

// heldRemaining estimates when a key held on some nodes can next be
// acquired: a quorum of nodes must be free, so among the nodes that reported
// the key taken, the k-th soonest to expire must expire, where k is how many
// of them must free up (taken − (n − quorum)). remaining has the holders'
// remaining TTLs (0 when unknown, sorted as soonest). It returns 0 when
// unknown.
func heldRemaining(n int, remaining []time.Duration) time.Duration {
	k := len(remaining) - (n - Quorum(n))
	if k <= 0 || len(remaining) == 0 {
		return 0
	}
	s := slices.Clone(remaining)
	slices.Sort(s) // unknown (0) first: such a holder may be gone any moment
	return s[k-1]
}
