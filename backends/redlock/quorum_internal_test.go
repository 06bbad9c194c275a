package redlock

import (
	"testing"
	"time"
)

func TestQuorum(t *testing.T) {
	for n, want := range map[int]int{3: 2, 5: 3, 7: 4, 9: 5} {
		if got := Quorum(n); got != want {
			t.Errorf("Quorum(%d) = %d, want %d", n, got, want)
		}
	}
}

func TestValidity(t *testing.T) {
	cases := []struct {
		ttl, elapsed time.Duration
		factor       float64
		want         time.Duration
	}{
		// 1s − 100ms − (10ms + 2ms)
		{time.Second, 100 * time.Millisecond, 0.01, 888 * time.Millisecond},
		{10 * time.Second, 0, 0.01, 10*time.Second - 102*time.Millisecond},
		{time.Second, 0, 0, time.Second - 2*time.Millisecond},
		// Slower than the TTL minus drift: nothing left.
		{time.Second, 988 * time.Millisecond, 0.01, 0},
		{time.Second, 2 * time.Second, 0.01, -time.Second - 12*time.Millisecond},
	}
	for _, c := range cases {
		if got := Validity(c.ttl, c.elapsed, c.factor); got != c.want {
			t.Errorf("Validity(%v, %v, %v) = %v, want %v", c.ttl, c.elapsed, c.factor, got, c.want)
		}
	}
}

func TestMaxToken(t *testing.T) {
	if got := maxToken([]uint64{7, 101, 7, 3}); got != 101 {
		t.Errorf("maxToken = %d, want 101", got)
	}
	if got := maxToken(nil); got != 0 {
		t.Errorf("maxToken(nil) = %d, want 0", got)
	}
}

func TestHeldRemaining(t *testing.T) {
	s := time.Second
	cases := []struct {
		name string
		n    int
		rem  []time.Duration
		want time.Duration
	}{
		// One holder on all 5 nodes: 3 of them must lapse, the 3rd soonest.
		{"holder everywhere", 5, []time.Duration{9 * s, 1 * s, 5 * s, 7 * s, 3 * s}, 5 * s},
		// Held on 3 of 5: one must lapse.
		{"held on a bare quorum", 5, []time.Duration{9 * s, 4 * s, 6 * s}, 4 * s},
		// Held on 4 of 5: two must lapse.
		{"held on four", 5, []time.Duration{9 * s, 4 * s, 6 * s, 8 * s}, 6 * s},
		{"unknown TTL counts as soonest", 5, []time.Duration{0, 4 * s, 6 * s}, 0},
		{"not enough holders to block", 5, []time.Duration{4 * s, 6 * s}, 0},
		{"three nodes", 3, []time.Duration{2 * s, 1 * s, 3 * s}, 2 * s},
	}
	for _, c := range cases {
		if got := heldRemaining(c.n, c.rem); got != c.want {
			t.Errorf("%s: heldRemaining(%d, %v) = %v, want %v", c.name, c.n, c.rem, got, c.want)
		}
	}
}

func TestVerdict(t *testing.T) {
	const (
		ok = NodeOK
		tk = NodeTaken
		un = NodeUnreachable
		fl = NodeFailed
	)
	cases := []struct {
		st   []NodeStatus
		want verdict
	}{
		{[]NodeStatus{ok, ok, ok, tk, tk}, reached},
		{[]NodeStatus{ok, ok, ok, un, un}, reached},
		{[]NodeStatus{ok, ok, tk, tk, tk}, byHolders},
		{[]NodeStatus{tk, tk, tk, un, un}, byHolders},
		{[]NodeStatus{ok, ok, un, tk, tk}, byOutage},
		{[]NodeStatus{ok, un, un, un, tk}, byOutage},
		{[]NodeStatus{un, un, un, un, un}, byOutage},
		{[]NodeStatus{fl, fl, fl, fl, fl}, byFailures},
		{[]NodeStatus{ok, ok, fl, fl, fl}, byFailures},
		{[]NodeStatus{ok, tk, tk, fl, fl}, byHolders}, // both together: no retry can help
		{[]NodeStatus{ok, tk, fl, fl, un}, byFailures},
		{[]NodeStatus{ok, ok, tk}, reached},
		{[]NodeStatus{ok, tk, un}, byOutage},
	}
	for _, c := range cases {
		if got := newTally(c.st).verdict(); got != c.want {
			t.Errorf("verdict(%v) = %d, want %d", c.st, got, c.want)
		}
	}
}
