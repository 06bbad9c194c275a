package ctxlock_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// Tests of claims made by the godoc that no other test proves.

// WithWorkers: "Default 8; values below 1 select the default."
func TestWorkersDefault(t *testing.T) {
	for name, opts := range map[string][]ctxlock.ManagerOption{
		"no option":    nil,
		"WithWorkers0": {ctxlock.WithWorkers(0)},
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				if n, most := extendConcurrency(t, 12, opts...); most != 8 || n < 12 {
					t.Fatalf("%d Extend calls, at most %d at once; want all 12 batches run, at most 8 at once", n, most)
				}
			})
		})
	}
}

// WithRefreshInterval: "It also turns refreshing back on after
// WithoutRefresh"; 0 restores the default interval.
func TestRefreshIntervalAfterWithoutRefresh(t *testing.T) {
	for name, tc := range map[string]struct {
		opts    []ctxlock.LockOption
		refresh bool
	}{
		"WithoutRefresh":                        {[]ctxlock.LockOption{ctxlock.WithoutRefresh()}, false},
		"WithoutRefresh then interval 0":        {[]ctxlock.LockOption{ctxlock.WithoutRefresh(), ctxlock.WithRefreshInterval(0)}, true},
		"WithoutRefresh then interval 1 second": {[]ctxlock.LockOption{ctxlock.WithoutRefresh(), ctxlock.WithRefreshInterval(time.Second)}, true},
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := ctxlock.NewManager(memory.New())
				defer closeManager(t, m)
				l := m.NewLock("k", append([]ctxlock.LockOption{ctxlock.WithTTL(3 * time.Second)}, tc.opts...)...)
				expired, err := l.Lock(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				time.Sleep(10 * time.Second) // three TTLs
				synctest.Wait()
				select {
				case <-expired:
					if tc.refresh {
						t.Fatalf("hold ended after 10s with a 3s TTL: %v; want it refreshed", l.Err())
					}
					if !errors.Is(l.Err(), ctxlock.ErrExpired) {
						t.Fatalf("hold without refresh ended with %v; want ErrExpired", l.Err())
					}
				default:
					if !tc.refresh {
						t.Fatal("hold without refresh still held after three TTLs")
					}
					if err := l.Unlock(); err != nil {
						t.Fatal(err)
					}
				}
			})
		})
	}
}

// logRecords is a slog handler that keeps every record.
type logRecords struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecords) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}
func (h *logRecords) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecords) WithGroup(string) slog.Handler      { return h }

// warnedKeys returns the key attribute of every Warn record.
func (h *logRecords) warnedKeys(t *testing.T) map[string]int {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	keys := make(map[string]int)
	for _, r := range h.records {
		if r.Level != slog.LevelWarn {
			t.Errorf("log record %q at level %v; want Warn", r.Message, r.Level)
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "key" {
				keys[a.Value.String()]++
			}
			return true
		})
	}
	return keys
}

// WithLogger: "a Warn for each hold that ends other than by Unlock (lost,
// expired, or ended by Close)".
func TestLoggerWarnsHoldsNotUnlocked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		b := memory.New()
		defer b.Close()
		logs := &logRecords{}
		m := ctxlock.NewManager(b, ctxlock.WithLogger(slog.New(logs)))
		lock := func(key string, opts ...ctxlock.LockOption) (ctxlock.Lock, <-chan struct{}) {
			l := m.NewLock(key, opts...)
			expired, err := l.Lock(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return l, expired
		}
		unlocked, _ := lock("unlocked")
		if err := unlocked.Unlock(); err != nil {
			t.Fatal(err)
		}
		lost, lostExpired := lock("lost", ctxlock.WithTTL(3*time.Second))
		b.Evict("lost")
		<-lostExpired
		expired, expiredCh := lock("expired", ctxlock.WithTTL(3*time.Second), ctxlock.WithoutRefresh())
		<-expiredCh
		lock("closed")
		if err := m.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if !errors.Is(lost.Err(), ctxlock.ErrLost) || !errors.Is(expired.Err(), ctxlock.ErrExpired) {
			t.Fatalf("holds ended with %v and %v; want ErrLost and ErrExpired", lost.Err(), expired.Err())
		}
		got := logs.warnedKeys(t)
		want := map[string]int{"lost": 1, "expired": 1, "closed": 1}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("Warn records by key: %v; want %v", got, want)
		}
	})
}
