package ctxlock_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// validOptions is the documented validation of NewLock's key and options,
// written out independently of options.go: the fuzz target compares the two.
func validOptions(key string, o ctxlock.LockOptions) (keyOK, optsOK bool) {
	keyOK = key != "" && len(key) <= ctxlock.MaxKeyLength
	allowance := time.Duration(float64(o.TTL)*o.DriftFactor) + 2*time.Millisecond
	optsOK = o.TTL > 0 && o.TTL <= 365*24*time.Hour &&
		!math.IsNaN(o.DriftFactor) && o.DriftFactor >= 0 && o.DriftFactor < 0.5 &&
		o.TTL > allowance && o.RetryDelay > 0 && o.AcquireTimeout > 0 &&
		o.RefreshInterval >= 0 && len(o.Metadata) <= ctxlock.MaxMetadataLength
	if optsOK && !o.NoRefresh {
		ri := o.RefreshInterval
		if ri == 0 {
			// TTL/3, or half the validity window where TTL/3 would not fit.
			ri = min(o.TTL/3, (o.TTL-allowance)/2)
		}
		optsOK = ri > 0 && ri < o.TTL-allowance
	}
	return keyOK, optsOK
}

// FuzzNewLock feeds NewLock fuzzed keys and options: Lock and TryLock must
// return an error matching ErrInvalidKey or ErrInvalidOption exactly when the
// input is invalid, succeed (or fail for another, stated reason) otherwise,
// and never panic.
func FuzzNewLock(f *testing.F) {
	f.Add("k", int64(time.Second), int64(0), 0.01, int64(10*time.Millisecond), int64(100*time.Millisecond), false, uint16(0))
	f.Add("", int64(time.Second), int64(0), 0.01, int64(1), int64(1), false, uint16(0))
	f.Add("ключ-🔒\x00\xff", int64(10*time.Millisecond), int64(3*time.Millisecond), 0.2, int64(1), int64(time.Second), false, uint16(10))
	f.Add(strings.Repeat("k", ctxlock.MaxKeyLength+1), int64(time.Second), int64(0), 0.0, int64(1), int64(1), true, uint16(0))
	f.Add("k", int64(time.Second), int64(time.Second), 0.01, int64(1), int64(1), false, uint16(0))
	f.Add("k", int64(3*time.Millisecond), int64(0), 0.0, int64(1), int64(1), true, uint16(0))
	f.Add("k", int64(math.MaxInt64), int64(-1), math.NaN(), int64(-1), int64(0), false, uint16(5000))
	f.Add("k", int64(365*24*time.Hour), int64(0), 0.49999, int64(1), int64(1), false, uint16(4096))
	f.Fuzz(func(t *testing.T, key string, ttl, refresh int64, drift float64, retry, acquireTimeout int64, noRefresh bool, metaLen uint16) {
		opts := []ctxlock.LockOption{
			ctxlock.WithTTL(time.Duration(ttl)),
			ctxlock.WithRefreshInterval(time.Duration(refresh)),
			ctxlock.WithDriftFactor(drift),
			ctxlock.WithRetryDelay(time.Duration(retry)),
			ctxlock.WithAcquireTimeout(time.Duration(acquireTimeout)),
			ctxlock.WithMetadata(strings.Repeat("m", int(metaLen))),
		}
		if noRefresh {
			opts = append(opts, ctxlock.WithoutRefresh())
		}
		o := ctxlock.DefaultLockOptions()
		o.Apply(opts...)
		keyOK, optsOK := validOptions(key, *o)
		if err := o.Validate(); (err == nil) != optsOK {
			t.Fatalf("Validate(%+v) = %v; documented rules say valid=%v", *o, err, optsOK)
		}

		m := ctxlock.NewManager(memory.New())
		defer func() {
			if err := m.Close(context.Background()); err != nil {
				t.Errorf("Close: %v", err)
			}
		}()
		l := m.NewLock(key, opts...)
		if l.Key() != key {
			t.Fatalf("Key() = %q; want %q", l.Key(), key)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		ok, exp, err := l.TryLock(ctx)
		switch {
		case !keyOK:
			if !errors.Is(err, ctxlock.ErrInvalidKey) || ok || exp != nil {
				t.Fatalf("TryLock(key %q) = (%v, %v, %v); want ErrInvalidKey", key, ok, exp, err)
			}
		case !optsOK:
			if !errors.Is(err, ctxlock.ErrInvalidOption) || ok || exp != nil {
				t.Fatalf("TryLock(%+v) = (%v, %v, %v); want ErrInvalidOption", *o, ok, exp, err)
			}
		case err != nil:
			// Valid input can still fail: a TTL of a few ms is shorter than
			// an attempt takes (under -race), which must be said as such.
			if errors.Is(err, ctxlock.ErrInvalidKey) || errors.Is(err, ctxlock.ErrInvalidOption) || ok || exp != nil {
				t.Fatalf("TryLock(%q, %+v) with valid input = (%v, %v, %v)", key, *o, ok, exp, err)
			}
		case !ok || exp == nil:
			t.Fatalf("TryLock(%q, %+v) on a free key = (%v, %v, nil)", key, *o, ok, exp)
		default:
			if l.Token() == 0 && !isClosed(exp) {
				t.Fatalf("held with token 0")
			}
			if err := l.Unlock(); err != nil && !errors.Is(err, ctxlock.ErrNotHeld) {
				t.Fatalf("Unlock: %v", err)
			}
			if !isClosed(exp) {
				t.Fatal("expiry channel open after Unlock")
			}
		}
		// Lock reports the same validation errors.
		if !keyOK || !optsOK {
			_, err := l.Lock(ctx)
			want := ctxlock.ErrInvalidKey
			if keyOK {
				want = ctxlock.ErrInvalidOption
			}
			if !errors.Is(err, want) {
				t.Fatalf("Lock(%q, %+v) = %v; want %v", key, *o, err, want)
			}
		}
	})
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
