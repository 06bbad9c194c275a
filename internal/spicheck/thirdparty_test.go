// Package spicheck_test is a third-party Backend written only from the
// public documentation of ctxlock.Backend and backends/locktest, and run
// through the conformance suite. It shows the smallest Backend that passes.
package spicheck_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/locktest"
)

type entry struct {
	owner   string
	token   uint64
	expires time.Time
}

// mapBackend is an in-process lease store: a map with TTLs on time.Now.
type mapBackend struct {
	mu       sync.Mutex
	leases   map[string]entry
	fences   map[string]uint64 // survives Evict and lapses
	watchers map[string]map[chan struct{}]struct{}
	down     bool
	// polling makes the store the least a Backend may be: Watch cannot
	// notify (nil channel) and HeldError carries no Remaining TTL.
	polling bool
}

func newMapBackend() *mapBackend {
	return &mapBackend{
		leases:   make(map[string]entry),
		fences:   make(map[string]uint64),
		watchers: make(map[string]map[chan struct{}]struct{}),
	}
}

var errDown = ctxlock.Unavailable(errors.New("spicheck: store down"))

// live returns key's entry if it has not lapsed. Callers hold mu.
func (b *mapBackend) live(key string, now time.Time) (entry, bool) {
	e, ok := b.leases[key]
	if !ok {
		return entry{}, false
	}
	if !now.Before(e.expires) {
		delete(b.leases, key)
		return entry{}, false
	}
	return e, true
}

func (b *mapBackend) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	if err := ctx.Err(); err != nil {
		return ctxlock.Lease{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down {
		return ctxlock.Lease{}, errDown
	}
	now := time.Now()
	if e, ok := b.live(req.Key, now); ok && e.owner != req.Owner {
		if b.polling {
			return ctxlock.Lease{}, &ctxlock.HeldError{} // Remaining unknown
		}
		return ctxlock.Lease{}, &ctxlock.HeldError{Remaining: e.expires.Sub(now)}
	}
	b.fences[req.Key]++
	tok := b.fences[req.Key]
	b.leases[req.Key] = entry{owner: req.Owner, token: tok, expires: now.Add(req.TTL)}
	return ctxlock.Lease{Key: req.Key, Owner: req.Owner, Token: tok}, nil
}

func (b *mapBackend) Extend(ctx context.Context, leases []ctxlock.Lease, ttl time.Duration) []error {
	errs := make([]error, len(leases))
	if ttl <= 0 { // bad input, not a loss (Backend.Extend)
		for i := range errs {
			errs[i] = ctxlock.ErrInvalidOption
		}
		return errs
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	for i, l := range leases {
		if b.down {
			errs[i] = errDown
			continue
		}
		e, ok := b.live(l.Key, now)
		if !ok || e.owner != l.Owner {
			errs[i] = ctxlock.ErrLost
			continue
		}
		e.expires = now.Add(ttl)
		b.leases[l.Key] = e
	}
	return errs
}

func (b *mapBackend) Release(ctx context.Context, leases []ctxlock.Lease) []error {
	errs := make([]error, len(leases))
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	for i, l := range leases {
		if b.down {
			errs[i] = errDown
			continue
		}
		if e, ok := b.live(l.Key, now); ok && e.owner == l.Owner {
			delete(b.leases, l.Key)
			b.notify(l.Key)
		}
	}
	return errs
}

// notify wakes key's watchers. Callers hold mu.
func (b *mapBackend) notify(key string) {
	for ch := range b.watchers[key] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Watch notifies releases only; lapses are left to HeldError.Remaining,
// which the Manager's waiters sleep until (see Backend.Watch).
func (b *mapBackend) Watch(key string) (<-chan struct{}, func()) {
	if b.polling {
		return nil, func() {} // cannot notify: the Manager polls
	}
	ch := make(chan struct{}, 1)
	b.mu.Lock()
	if b.watchers[key] == nil {
		b.watchers[key] = make(map[chan struct{}]struct{})
	}
	b.watchers[key][ch] = struct{}{}
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		delete(b.watchers[key], ch)
		if len(b.watchers[key]) == 0 {
			delete(b.watchers, key)
		}
		b.mu.Unlock()
	}
}

func (b *mapBackend) Health(ctx context.Context) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down {
		return []string{"store down"}, errDown
	}
	return nil, nil
}

func (b *mapBackend) Close() error { return nil }

// SetUnavailable implements locktest.Faulty.
func (b *mapBackend) SetUnavailable(down bool) {
	b.mu.Lock()
	b.down = down
	b.mu.Unlock()
}

// Evict implements locktest.Evicter.
func (b *mapBackend) Evict(key string) {
	b.mu.Lock()
	delete(b.leases, key)
	b.mu.Unlock()
}

var (
	_ ctxlock.Backend  = (*mapBackend)(nil)
	_ locktest.Faulty  = (*mapBackend)(nil)
	_ locktest.Evicter = (*mapBackend)(nil)
)

func TestThirdPartyConformance(t *testing.T) {
	locktest.Run(t, func(t *testing.T) ctxlock.Backend { return newMapBackend() })
}

// fakeTimeMap is the same store, declared safe for a synctest bubble: it
// uses only time.Now and a mutex.
type fakeTimeMap struct{ *mapBackend }

func (fakeTimeMap) FakeTimeSafe() bool { return true }

func TestThirdPartyConformanceFakeTime(t *testing.T) {
	locktest.Run(t, func(t *testing.T) ctxlock.Backend { return fakeTimeMap{newMapBackend()} })
}

// A Backend that neither notifies nor reports the holder's remaining TTL is
// allowed (Backend.Watch: "A nil channel means the backend cannot notify").
// Under fake time the suite must then allow the Manager's polling backoff
// instead of asserting the instant of a release or lapse.
func TestThirdPartyConformancePolling(t *testing.T) {
	locktest.Run(t, func(t *testing.T) ctxlock.Backend {
		b := newMapBackend()
		b.polling = true
		return fakeTimeMap{b}
	})
}
