package ctxlock_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/memory"
)

// fuzzBytes reads a fuzz input front to back; past its end it reads zeros.
type fuzzBytes []byte

func (b *fuzzBytes) byte() byte {
	if len(*b) == 0 {
		return 0
	}
	c := (*b)[0]
	*b = (*b)[1:]
	return c
}

// dur reads a duration of 1..256 units, the unit one of ns, µs, ms, 10ms,
// 100ms, s, min.
func (b *fuzzBytes) dur() time.Duration {
	units := []time.Duration{time.Nanosecond, time.Microsecond, time.Millisecond,
		10 * time.Millisecond, 100 * time.Millisecond, time.Second, time.Minute}
	u := units[int(b.byte())%len(units)]
	return time.Duration(int(b.byte())+1) * u
}

// fuzzLockOptions decodes options whose scale is anything from nanoseconds to
// minutes, valid or not.
func fuzzLockOptions(b *fuzzBytes) ([]ctxlock.LockOption, ctxlock.LockOptions, string) {
	o := *ctxlock.DefaultLockOptions()
	var opts []ctxlock.LockOption
	var desc []string
	add := func(opt ctxlock.LockOption, d string) {
		opts = append(opts, opt)
		o.Apply(opt)
		desc = append(desc, d)
	}
	flags := b.byte()
	if flags&1 != 0 {
		d := b.dur()
		add(ctxlock.WithTTL(d), "ttl="+d.String())
	}
	if flags&2 != 0 {
		f := float64(b.byte()) / 512 // [0, 0.5)
		add(ctxlock.WithDriftFactor(f), fmt.Sprint("drift=", f))
	}
	if flags&4 != 0 {
		d := b.dur()
		add(ctxlock.WithRetryDelay(d), "retry="+d.String())
	}
	if flags&8 != 0 {
		d := b.dur()
		add(ctxlock.WithAcquireTimeout(d), "acqto="+d.String())
	}
	switch {
	case flags&16 != 0:
		add(ctxlock.WithoutRefresh(), "norefresh")
	case flags&32 != 0:
		// A refresh interval as a share (1..256)/256 of the validity window.
		win := o.TTL - time.Duration(float64(o.TTL)*o.DriftFactor) - 2*time.Millisecond
		ri := time.Duration(float64(win) * float64(int(b.byte())+1) / 256)
		add(ctxlock.WithRefreshInterval(ri), "refresh="+ri.String())
	}
	return opts, o, strings.Join(desc, ",")
}

// FuzzHolds drives three Lock values on one key (two on one Manager, one on
// another, sharing a memory backend) through a fuzzed sequence of Lock,
// TryLock, Unlock, sleeps and backend outages and delays, with fuzzed
// options at every scale, in fake time. After every step it checks the
// guarantees of the Lock interface: while a hold's expiry channel is open
// the backend holds its lease (token included) and no other hold of the key
// is open; fencing tokens increase; invalid options are refused as such; and
// Close ends every hold. An input that takes more than 5s of real time
// fails too (CTXLOCK_FUZZ_SLOW_OK=1 lets it pass); CTXLOCK_FUZZ_TRACE=1 logs
// every input's trace.
func FuzzHolds(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 1, 0, 2, 3, 5, 3})
	// Lock 0 holds; 1 (other Manager) and 2 (same Manager) wait; sleeps.
	f.Add([]byte{0x21, 2, 3, 0x21, 2, 20, 0x01, 2, 100, 0x02, 2, 0, 0x12, 2, 50, 0x22, 2, 50, 4, 80, 0x03, 4, 200, 0x13, 4, 10, 7, 4, 100})
	f.Add([]byte{1, 2, 3, 2, 0x21, 5, 2, 0x80, 0x13, 2, 9, 0, 0, 1, 1, 0, 2, 5, 1, 0, 2, 4, 3, 2, 9, 6, 1, 4, 3, 5, 10})
	f.Add([]byte{0x3f, 2, 4, 200, 2, 0, 1, 2, 8, 0xff, 0x0b, 2, 5, 2, 3, 0x01, 5, 2, 0, 0, 0, 0, 1, 1, 3, 2, 9, 1, 1, 2, 0, 5, 2, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 400 {
			return
		}
		defer slowInput(t, time.Now())
		synctest.Test(t, func(t *testing.T) { fuzzHolds(t, memory.New(), 0, data, "memory") })
	})
}

// FuzzHoldsWaiterQueue is FuzzHolds on the fake WaiterQueue backend of the
// model tests (granting, as goredis does, or hinting, as with
// WithWaiterHints and redlock), its faults (notifications dropped or
// delayed, calls applied before a lost reply) decoded from the input too.
func FuzzHoldsWaiterQueue(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 3, 5, 3})
	f.Add([]byte{0xff, 4, 3, 0x23, 0x80, 0, 1, 0x21, 2, 3, 0x21, 2, 20, 0x01, 2, 100, 0x02, 2, 0, 0x12, 2, 50, 0x22, 2, 50, 4, 80, 0x03, 4, 200, 0x13, 4, 10, 7, 4, 100})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 400 {
			return
		}
		defer slowInput(t, time.Now())
		synctest.Test(t, func(t *testing.T) {
			in := fuzzBytes(data)
			flags := in.byte()
			c := wqConfig{
				keep:         []time.Duration{3 * time.Second, 1500 * time.Millisecond, 600 * time.Millisecond, 50 * time.Millisecond}[in.byte()%4],
				dropP:        float64(in.byte()%5) / 4,
				delayP:       float64(in.byte()%5) / 4,
				maxDelay:     in.dur() % (2 * time.Second),
				earlyP:       float64(in.byte()%3) / 2,
				grantOnLapse: flags&1 != 0,
				notifyLapses: flags&2 != 0,
				hintOnUp:     flags&4 != 0,
			}
			if flags&8 != 0 {
				c.hintWindow = in.dur() % (2 * time.Second)
			}
			b := newWQBackend(c, 1)
			fuzzHolds(t, b, c.keep, []byte(in), c.String())
		})
	})
}

// slowInput fails an input that took more than a few seconds of real time:
// a minute of fake time, bounded as fuzzHolds bounds it, should not.
func slowInput(t *testing.T, start time.Time) {
	if d := time.Since(start); d > 5*time.Second && os.Getenv("CTXLOCK_FUZZ_SLOW_OK") == "" {
		t.Fatalf("input took %v", d)
	}
}

// fuzzStore is a Backend with the test switches of memory.Backend.
type fuzzStore interface {
	ctxlock.Backend
	SetUnavailable(bool)
	SetLatency(time.Duration)
	Holder(key string) (owner, metadata string, token uint64, remaining time.Duration, ok bool)
	Evict(key string)
}

type fuzzHold struct {
	l       ctxlock.Lock
	o       ctxlock.LockOptions
	valid   bool
	desc    string
	exp     <-chan struct{}
	token   uint64
	evicted bool // the store forgot its lease: the holder learns at its next refresh
}

// fuzzHolds runs the ops of data on store, whose waiters' places in
// queues (if any) lapse after keep.
func fuzzHolds(t *testing.T, store fuzzStore, keep time.Duration, data []byte, desc string) {
	in := fuzzBytes(data)
	var trace []string
	t0 := time.Now()
	logf := func(format string, args ...any) {
		trace = append(trace, fmt.Sprintf("%v: ", time.Since(t0))+fmt.Sprintf(format, args...))
	}
	defer func() {
		if t.Failed() || os.Getenv("CTXLOCK_FUZZ_TRACE") != "" {
			t.Logf("input %x\n%s", data, strings.Join(trace, "\n"))
		}
	}()
	defer store.Close()
	logf("store: %s", desc)
	mgrs := []*ctxlock.Manager{
		ctxlock.NewManager(store, ctxlock.WithNamespace("ns:")),
		ctxlock.NewManager(store, ctxlock.WithNamespace("ns:"), ctxlock.WithWorkers(1)),
	}
	const fullKey = "ns:k"
	var locks []*fuzzHold
	maxTTL := time.Duration(0)
	minRefresh := time.Duration(1<<63 - 1)
	for i := range 3 {
		opts, o, desc := fuzzLockOptions(&in)
		valid := o.Validate() == nil
		// Keep the number of refreshes per TTL bounded, so that sleeps of a
		// few TTLs stay cheap.
		if valid && !o.NoRefresh {
			ri := o.RefreshInterval
			if ri == 0 {
				ri = min(o.TTL/3, (o.TTL-time.Duration(float64(o.TTL)*o.DriftFactor)-2*time.Millisecond)/2)
			}
			if ri < o.TTL/64 || ri < time.Microsecond {
				opts = append(opts, ctxlock.WithoutRefresh())
				o.NoRefresh = true
				desc += ",norefresh(bound)"
			}
		}
		if valid {
			maxTTL = max(maxTTL, o.TTL)
			if !o.NoRefresh {
				ri := o.RefreshInterval
				if ri == 0 {
					ri = min(o.TTL/3, (o.TTL-time.Duration(float64(o.TTL)*o.DriftFactor)-2*time.Millisecond)/2)
				}
				minRefresh = min(minRefresh, ri)
			}
		}
		mi := i % 2 // locks 0 and 2 on manager 0, lock 1 on manager 1
		locks = append(locks, &fuzzHold{l: mgrs[mi].NewLock("k", opts...), o: o, valid: valid, desc: desc})
		logf("lock %d (manager %d): %s valid=%v", i, mi, desc, valid)
	}
	if maxTTL == 0 {
		maxTTL = time.Second
	}
	// Any wait is at most 256 refreshes of the most often refreshed lock,
	// and 30s: in an outage, a waiting Lock queues a release per attempt
	// (about one a second) that is retried (about once a second) for a TTL.
	maxWait := min(4*maxTTL, 256*minRefresh, 30*time.Second)
	bound := func(d time.Duration) time.Duration { return min(d, maxWait) }
	lastToken := uint64(0)
	open := func(h *fuzzHold) bool { return h.exp != nil && !isClosed(h.exp) }

	check := func(step int, what string) {
		synctest.Wait()
		owner, _, token, _, held := store.Holder(fullKey)
		var live *fuzzHold
		for i, h := range locks {
			if !open(h) {
				if h.exp != nil && h.l.Token() != 0 {
					t.Fatalf("step %d (%s): lock %d ended but Token() = %d", step, what, i, h.l.Token())
				}
				continue
			}
			if h.l.Err() != nil {
				t.Fatalf("step %d (%s): lock %d open with Err %v", step, what, i, h.l.Err())
			}
			if got := h.l.Token(); got != h.token {
				t.Fatalf("step %d (%s): lock %d Token() = %d, hold got %d", step, what, i, got, h.token)
			}
			if h.evicted {
				continue
			}
			if live != nil {
				t.Fatalf("step %d (%s): two open holds of the key (tokens %d, %d)", step, what, live.token, h.token)
			}
			live = h
			if !held || token != h.token {
				t.Fatalf("step %d (%s): lock %d open with token %d, the store has held=%v owner %q token %d",
					step, what, i, h.token, held, owner, token)
			}
		}
	}
	got := func(i int, step int, what string, exp <-chan struct{}) {
		h := locks[i]
		h.exp, h.evicted = exp, false
		h.token = h.l.Token()
		logf("lock %d acquired token %d", i, h.token)
		if h.token <= lastToken {
			t.Fatalf("step %d (%s): lock %d got token %d after %d", step, what, i, h.token, lastToken)
		}
		lastToken = h.token
	}
	checkErr := func(i int, step int, what string, err error) {
		h := locks[i]
		if !h.valid {
			if !errors.Is(err, ctxlock.ErrInvalidOption) {
				t.Fatalf("step %d (%s): lock %d with invalid options (%s): %v", step, what, i, h.desc, err)
			}
			return
		}
		if errors.Is(err, ctxlock.ErrInvalidOption) || errors.Is(err, ctxlock.ErrInvalidKey) {
			t.Fatalf("step %d (%s): lock %d with valid options (%s): %v", step, what, i, h.desc, err)
		}
	}

	ctx := context.Background()
	for step := 0; len(in) > 0 && step < 60; step++ {
		op := in.byte()
		i := int(op>>4) % 3
		h := locks[i]
		var what string
		switch op % 8 {
		case 0, 1:
			what = fmt.Sprintf("TryLock %d", i)
			cctx, cancel := context.WithTimeout(ctx, bound(in.dur()))
			ok, exp, err := h.l.TryLock(cctx)
			cancel()
			logf("%s = %v, %v", what, ok, err)
			switch {
			case ok:
				if err != nil || exp == nil {
					t.Fatalf("step %d: %s = (true, %v, %v)", step, what, exp, err)
				}
				got(i, step, what, exp)
			case err != nil:
				checkErr(i, step, what, err)
			}
		case 2:
			what = fmt.Sprintf("Lock %d", i)
			if open(h) {
				break // would wait for its own Unlock
			}
			cctx, cancel := context.WithTimeout(ctx, bound(in.dur()))
			exp, err := h.l.Lock(cctx)
			cancel()
			logf("%s = %v", what, err)
			if err == nil {
				got(i, step, what, exp)
			} else {
				checkErr(i, step, what, err)
			}
		case 3:
			what = fmt.Sprintf("Unlock %d", i)
			wasOpen := open(h)
			err := h.l.Unlock()
			logf("%s = %v", what, err)
			// Unlock of an open hold succeeds; of anything else says ErrNotHeld.
			if wasOpen && err != nil || !wasOpen && !errors.Is(err, ctxlock.ErrNotHeld) {
				t.Fatalf("step %d: %s = %v with hold open=%v", step, what, err, wasOpen)
			}
			if h.exp != nil && !isClosed(h.exp) {
				t.Fatalf("step %d: %s left the expiry channel open", step, what)
			}
		case 4:
			d := bound(time.Duration(float64(maxTTL) * float64(in.byte()) / 64))
			what = "sleep " + d.String()
			logf("%s", what)
			time.Sleep(d)
		case 5:
			down := in.byte()&1 != 0
			what = fmt.Sprint("unavailable ", down)
			logf("%s", what)
			store.SetUnavailable(down)
		case 6:
			d := time.Duration(float64(maxTTL) * float64(in.byte()) / 256)
			what = "latency " + d.String()
			logf("%s", what)
			store.SetLatency(d)
		case 7:
			what = "evict"
			logf("%s", what)
			store.Evict(fullKey)
			for _, h := range locks {
				if open(h) {
					h.evicted = true
				}
			}
		}
		check(step, what)
	}
	store.SetUnavailable(false)
	store.SetLatency(0)
	for j, m := range mgrs {
		cctx, cancel := context.WithTimeout(ctx, 2*maxTTL+time.Second)
		err := m.Close(cctx)
		cancel()
		if err != nil {
			t.Fatalf("Close manager %d: %v", j, err)
		}
	}
	for i, h := range locks {
		if open(h) {
			t.Fatalf("lock %d open after Close", i)
		}
	}
	time.Sleep(maxTTL + 2*keep + time.Second)
	if owner, _, _, _, held := store.Holder(fullKey); held {
		t.Fatalf("key held by %q after Close and a TTL", owner)
	}
}
