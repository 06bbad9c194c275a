package chaostest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/locktest"
)

// HoldFor keeps a hold for d, watching the expiry channel, then unlocks
// it. It returns the hold as the checker wants it (End is when the holder
// stopped relying on it: when it saw the channel closed, or just before
// Unlock) and whether the hold ended on its own.
func HoldFor(l ctxlock.Lock, exp <-chan struct{}, who string, start time.Time, token uint64, d time.Duration) (locktest.Hold, bool) {
	h := locktest.Hold{Key: l.Key(), Owner: who, Token: token, Start: start}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-exp:
		h.End = time.Now()
		return h, true
	case <-timer.C:
	}
	h.End = time.Now()
	if err := l.Unlock(); err != nil {
		// The hold ended between the timer and Unlock: End is still an
		// upper bound of when it was relied on.
		return h, true
	}
	return h, false
}

// Reason names why a hold ended (Lock.Err), for tallies: "expired",
// "lost", "closed", "unlocked" or "other".
func Reason(err error) string {
	switch {
	case errors.Is(err, ctxlock.ErrExpired):
		return "expired"
	case errors.Is(err, ctxlock.ErrLost):
		return "lost"
	case errors.Is(err, ctxlock.ErrClosed):
		return "closed"
	case errors.Is(err, ctxlock.ErrUnlocked):
		return "unlocked"
	}
	return "other"
}

// Stats is a tally of named counters (faults injected, holds by how they
// ended) and named samples of durations (Lock calls, Liveness B margins),
// safe for concurrent use. Its zero value is empty and ready.
type Stats struct {
	mu sync.Mutex
	n  map[string]int
	d  map[string][]time.Duration
}

// Add adds k to the counter name.
func (s *Stats) Add(name string, k int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == nil {
		s.n = map[string]int{}
	}
	s.n[name] += k
}

// Sample records d under name.
func (s *Stats) Sample(name string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.d == nil {
		s.d = map[string][]time.Duration{}
	}
	s.d[name] = append(s.d[name], d)
}

// Samples returns name's samples, sorted.
func (s *Stats) Samples(name string) []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.d[name])
	slices.Sort(out)
	return out
}

// Total returns the sum of every counter.
func (s *Stats) Total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, k := range s.n {
		n += k
	}
	return n
}

// String returns the counters as "name=k" pairs, sorted by name.
func (s *Stats) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range s.n {
			if !yield(k) {
				return
			}
		}
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, s.n[k])
	}
	return strings.Join(parts, " ")
}

// Summary formats sorted samples as n, min, median and max.
func Summary(ds []time.Duration) string {
	if len(ds) == 0 {
		return "no samples"
	}
	return fmt.Sprintf("n=%d min=%v median=%v max=%v", len(ds), ds[0].Round(time.Millisecond),
		ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
}

// CalmProgress checks liveness once the faults have stopped: every
// contender (Add) must lock again, a hold that starts after the calm
// (Start), within a bound (Wait).
type CalmProgress struct {
	from  atomic.Int64 // the calm, in Unix ns; 0 before it
	done  chan struct{}
	mu    sync.Mutex
	names []string
	waits []time.Duration // per contender, from the calm to its first hold; -1 until then
	moved int
}

// NewCalmProgress returns a CalmProgress with no contenders.
func NewCalmProgress() *CalmProgress { return &CalmProgress{done: make(chan struct{})} }

// Add registers a contender before the workers start, and returns the
// function its worker calls with every hold.
func (p *CalmProgress) Add(name string) func(locktest.Hold) {
	p.mu.Lock()
	i := len(p.names)
	p.names = append(p.names, name)
	p.waits = append(p.waits, -1)
	p.mu.Unlock()
	return func(h locktest.Hold) {
		from := p.from.Load()
		if from == 0 || h.Start.UnixNano() <= from {
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.waits[i] >= 0 {
			return
		}
		p.waits[i] = h.Start.Sub(time.Unix(0, from))
		if p.moved++; p.moved == len(p.names) {
			close(p.done)
		}
	}
}

// Start marks the calm.
func (p *CalmProgress) Start(calm time.Time) { p.from.Store(calm.UnixNano()) }

// Calm reports whether the calm has started.
func (p *CalmProgress) Calm() bool { return p.from.Load() != 0 }

// Wait waits until every contender has locked since the calm, or bound has
// passed; it returns the contenders that have not (nil when none).
func (p *CalmProgress) Wait(bound time.Duration) (stuck []string) {
	timer := time.NewTimer(bound)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, w := range p.waits {
		if w < 0 {
			stuck = append(stuck, p.names[i])
		}
	}
	return stuck
}

// LockWaits returns, sorted, how long after the calm each contender that
// locked again did.
func (p *CalmProgress) LockWaits() []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ws []time.Duration
	for _, w := range p.waits {
		if w >= 0 {
			ws = append(ws, w)
		}
	}
	slices.Sort(ws)
	return ws
}
