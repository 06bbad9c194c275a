package locktest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// Hold is one hold as a test saw it: from the moment Lock returned (Start) to
// the moment the holder stopped relying on it (End): just before it called
// Unlock, or when it saw the expiry channel closed.
type Hold struct {
	Key   string // the lock's key, as the test names it
	Owner string // who held it, for messages
	Token uint64 // the hold's fencing token
	// Start is when Lock (or TryLock) returned the hold.
	Start time.Time
	// End is when the holder stopped relying on it: just before it called
	// Unlock, or when it saw the expiry channel closed.
	End time.Time
}

// Checker records holds from any number of goroutines and checks mutual
// exclusion: no two holds of one key overlap, and a key's fencing tokens
// increase from one hold to the next. Times must come from time.Now in one
// process, so that they carry the monotonic clock. The zero value is ready.
type Checker struct {
	mu    sync.Mutex
	holds []Hold
}

// Record adds a finished hold.
func (c *Checker) Record(h Hold) {
	c.mu.Lock()
	c.holds = append(c.holds, h)
	c.mu.Unlock()
}

// Holds returns a copy of the recorded holds.
func (c *Checker) Holds() []Hold {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.holds)
}

// Violations returns a description of every overlap and every fencing token
// that does not increase (comparing each key's holds in the order they
// started), sorted as strings.
func (c *Checker) Violations() []string {
	byKey := map[string][]Hold{}
	for _, h := range c.Holds() {
		byKey[h.Key] = append(byKey[h.Key], h)
	}
	var out []string
	for key, hs := range byKey {
		slices.SortFunc(hs, func(a, b Hold) int { return a.Start.Compare(b.Start) })
		for i := 1; i < len(hs); i++ {
			prev, cur := hs[i-1], hs[i]
			if cur.Start.Before(prev.End) {
				out = append(out, fmt.Sprintf("key %q: hold of %s (token %d) started %v before the hold of %s (token %d) ended",
					key, cur.Owner, cur.Token, prev.End.Sub(cur.Start), prev.Owner, prev.Token))
			}
			if cur.Token <= prev.Token {
				out = append(out, fmt.Sprintf("key %q: token %d of %s does not increase on token %d of %s",
					key, cur.Token, cur.Owner, prev.Token, prev.Owner))
			}
		}
	}
	slices.Sort(out)
	return out
}

// Check fails t for every violation and returns the number of holds checked.
func (c *Checker) Check(t testing.TB) int {
	t.Helper()
	for _, v := range c.Violations() {
		t.Error(v)
	}
	return len(c.Holds())
}
