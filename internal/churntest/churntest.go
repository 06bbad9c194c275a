// Package churntest is a workload for resource-leak tests: a service that
// locks many distinct keys (per-entity keys such as "order:123") once each,
// with contention between two Managers (processes), waiters cancelled mid-wait,
// TryLocks that find the key held, Do, and holds that lapse. After Run every
// lock is unlocked and every call has returned, so whatever state the
// Managers and their backends still keep per key is a leak, unless it is
// documented (fencing counters) or lapses on its own.
package churntest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
)

// Run churns nkeys distinct keys ("order:<i>") through m and m2, at most
// parallel keys at a time, and reports unexpected errors on t. Transient
// backend faults (a loaded machine's timeouts) are tolerated. evict, if not
// nil, makes the backend lose the lease of a key (its full name, with the
// Managers' namespace "svc:"), as data loss would: the hold ends with
// ErrLost at its next refresh.
func Run(t testing.TB, m, m2 *ctxlock.Manager, nkeys, parallel int, evict func(key string)) {
	t.Helper()
	lockOpts := []ctxlock.LockOption{ctxlock.WithTTL(time.Second), ctxlock.WithRetryDelay(5 * time.Millisecond)}
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	errc := make(chan error, 100)
	report := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	both := []*ctxlock.Manager{m2, m}
	for i := range nkeys {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			key := fmt.Sprintf("order:%d", i)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			holder := m.NewLock(key, lockOpts...)
			if _, err := holder.Lock(ctx); err != nil {
				report(fmt.Errorf("%s: holder: %w", key, err))
				return
			}
			var inner sync.WaitGroup
			switch i % 6 {
			case 0: // two waiters (another process, this one), both get the key in turn
				for _, mm := range both {
					inner.Go(func() {
						l := mm.NewLock(key, lockOpts...)
						if _, err := l.Lock(ctx); err != nil {
							report(fmt.Errorf("%s: waiter: %w", key, err))
							return
						}
						time.Sleep(time.Millisecond)
						_ = l.Unlock()
					})
				}
			case 1: // waiters cancelled mid-wait
				for _, mm := range both {
					inner.Go(func() {
						wctx, wcancel := context.WithTimeout(ctx, 15*time.Millisecond)
						defer wcancel()
						l := mm.NewLock(key, lockOpts...)
						if _, err := l.Lock(wctx); err == nil {
							_ = l.Unlock()
						} else if !errors.Is(err, context.DeadlineExceeded) {
							report(fmt.Errorf("%s: cancelled waiter: %w", key, err))
						}
					})
				}
				time.Sleep(25 * time.Millisecond)
			case 2: // TryLocks that find the key held
				for _, mm := range both {
					ok, _, err := mm.NewLock(key, lockOpts...).TryLock(ctx)
					if (err != nil && !errors.Is(err, ctxlock.ErrUnavailable)) || ok {
						report(fmt.Errorf("%s: TryLock = %v, %v", key, ok, err))
					}
				}
			case 3: // Do, waiting for the key
				inner.Go(func() {
					err := ctxlock.Do(ctx, m2.NewLock(key, lockOpts...), func(context.Context) error { return nil })
					if err != nil {
						report(fmt.Errorf("%s: Do: %w", key, err))
					}
				})
			case 4: // a Lock whose context is already done
				wctx, wcancel := context.WithCancel(ctx)
				wcancel()
				_, _ = m2.NewLock(key, lockOpts...).Lock(wctx)
			case 5: // a hold that lapses (no refresh) while another key waits
				inner.Go(func() {
					l := m2.NewLock(key, lockOpts...)
					if _, err := l.Lock(ctx); err != nil {
						report(fmt.Errorf("%s: waiter: %w", key, err))
						return
					}
					_ = l.Unlock()
				})
				short := m.NewLock(key+":short", ctxlock.WithTTL(150*time.Millisecond), ctxlock.WithoutRefresh())
				if exp, err := short.Lock(ctx); err == nil {
					<-exp
				}
				if evict != nil { // and a hold that is lost
					lost := m2.NewLock(key+":lost", ctxlock.WithTTL(300*time.Millisecond))
					if exp, err := lost.Lock(ctx); err == nil {
						evict("svc:" + key + ":lost")
						<-exp
						if err := lost.Err(); !errors.Is(err, ctxlock.ErrLost) && !errors.Is(err, ctxlock.ErrExpired) {
							report(fmt.Errorf("%s: evicted hold ended with %v", key, err))
						}
					}
				}
			}
			time.Sleep(2 * time.Millisecond)
			_ = holder.Unlock()
			inner.Wait()
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

// Eventually polls cond until it returns "" and fails t with its last
// answer when d has passed first.
func Eventually(t testing.TB, d time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ManagerSizes are the sizes of a Manager's per-key and scheduling state.
type ManagerSizes struct{ Keys, Holds, Releases, Leaves, Pending, Attempts int }

// ManagerState reads m's state sizes (unexported fields, read through
// reflect under m's mutex).
func ManagerState(m *ctxlock.Manager) ManagerSizes {
	v := reflect.ValueOf(m).Elem()
	mu := (*sync.Mutex)(unsafe.Pointer(v.FieldByName("mu").UnsafeAddr()))
	mu.Lock()
	defer mu.Unlock()
	return ManagerSizes{
		Keys:     v.FieldByName("keys").Len(),
		Holds:    v.FieldByName("holds").FieldByName("items").Len(),
		Releases: v.FieldByName("releases").FieldByName("items").Len(),
		Leaves:   v.FieldByName("leaves").Len(),
		Pending:  int(v.FieldByName("pending").Int()),
		Attempts: int(v.FieldByName("attempts").Int()),
	}
}

// ManagersEmpty waits (up to d) until every Manager keeps no state at all.
func ManagersEmpty(t testing.TB, d time.Duration, ms ...*ctxlock.Manager) {
	t.Helper()
	for _, m := range ms {
		Eventually(t, d, func() string {
			if st := ManagerState(m); st != (ManagerSizes{}) {
				return fmt.Sprintf("Manager state not empty: %+v", st)
			}
			return ""
		})
	}
}

// Goroutines waits (up to d) until at most base+slack goroutines run.
func Goroutines(t testing.TB, d time.Duration, base, slack int) {
	t.Helper()
	Eventually(t, d, func() string {
		if n := runtime.NumGoroutine(); n > base+slack {
			return fmt.Sprintf("%d goroutines, %d at the start", n, base)
		}
		return ""
	})
}

// RedisOnlyFences waits (up to d) until the only keys left on c are fencing
// counters ("...}:fence"), failing earlier if a key other than a fencing
// counter has no TTL (it would never go). It returns the number of fencing
// counters.
func RedisOnlyFences(t testing.TB, d time.Duration, c redis.UniversalClient) (fences int) {
	t.Helper()
	ctx := context.Background()
	Eventually(t, d, func() string {
		var others, noTTL []string
		fences = 0
		iter := c.Scan(ctx, 0, "*", 1000).Iterator()
		for iter.Next(ctx) {
			k := iter.Val()
			if strings.HasSuffix(k, "}:fence") {
				fences++
				continue
			}
			others = append(others, k)
			// go-redis answers -1 (no TTL) and -2 (gone) unscaled.
			if ttl, err := c.PTTL(ctx, k).Result(); err == nil && ttl == -1 {
				noTTL = append(noTTL, k)
			}
		}
		if err := iter.Err(); err != nil {
			return err.Error()
		}
		if len(noTTL) > 0 {
			t.Fatalf("%d keys other than fencing counters have no TTL, e.g. %q", len(noTTL), noTTL[:min(5, len(noTTL))])
		}
		if len(others) > 0 {
			return fmt.Sprintf("%d keys left besides %d fencing counters, e.g. %q", len(others), fences, others[:min(5, len(others))])
		}
		return ""
	})
	return fences
}
