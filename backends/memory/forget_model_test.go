package memory

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxlock/ctxlock"
)

type mKey struct {
	owner   string
	expires time.Time
	wanted  bool
	last    uint64
}

type mWatch struct {
	key     string
	ch      <-chan struct{}
	stop    func()
	active  bool
	pending bool // a release or lapse happened since the last drain
}

func TestForgetModel(t *testing.T) {
	for seed := range uint64(500) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { forgetModel(t, seed) })
		})
	}
}

func forgetModel(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 1))
	ctx := context.Background()
	b := New()
	defer b.Close()
	keys := []string{"a", "b", "c"}
	owners := []string{"p", "q", "r"}
	model := map[string]*mKey{}
	for _, k := range keys {
		model[k] = &mKey{}
	}
	var leases []ctxlock.Lease
	var watches []*mWatch
	free := func(k string) { // a held key becomes free
		for _, w := range watches {
			if w.active && w.key == k {
				w.pending = true
			}
		}
	}
	now := func() time.Time { return time.Now() }
	lapse := func() {
		for k, m := range model {
			if m.owner != "" && !now().Before(m.expires) {
				m.owner, m.wanted = "", false
				free(k)
			}
		}
	}
	acq := func(req ctxlock.AcquireRequest, l ctxlock.Lease, err error) {
		m := model[req.Key]
		if m.owner != "" {
			if !errors.Is(err, ctxlock.ErrHeld) {
				t.Fatalf("acquire %v over held %q: %v %v", req, m.owner, l, err)
			}
			if m.owner != req.Owner {
				m.wanted = true
			}
			return
		}
		if err != nil {
			t.Fatalf("acquire %v of free key: %v", req, err)
		}
		if l.Token <= m.last {
			t.Fatalf("token of %q went from %d to %d", req.Key, m.last, l.Token)
		}
		m.last, m.owner, m.expires, m.wanted = l.Token, req.Owner, now().Add(req.TTL), false
		leases = append(leases, l)
	}
	n := 0
	for step := range 400 {
		b.mu.Lock()
		b.sweepAt = 0
		b.mu.Unlock()
		ttl := time.Duration(1+r.IntN(4))*time.Second + 500*time.Millisecond
		k := keys[r.IntN(len(keys))]
		req := ctxlock.AcquireRequest{Key: k, Owner: owners[r.IntN(len(owners))], TTL: ttl}
		var desc string
		switch op := r.IntN(9); op {
		case 0, 1:
			desc = "acquire"
			l, err := b.Acquire(ctx, req)
			acq(req, l, err)
		case 2:
			desc = "release"
			if len(leases) == 0 {
				continue
			}
			l := leases[r.IntN(len(leases))]
			_, cont := b.ReleaseContended(ctx, []ctxlock.Lease{l})
			m := model[l.Key]
			if m.owner == l.Owner {
				if (len(cont) > 0 && cont[0]) != m.wanted {
					t.Fatalf("contended %v, model wanted %v", cont, m.wanted)
				}
				m.owner, m.wanted = "", false
				free(l.Key)
			}
		case 3:
			desc = "relock"
			if len(leases) == 0 {
				continue
			}
			old := leases[r.IntN(len(leases))]
			l, wanted, _, err := b.Relock(ctx, old, req)
			m := model[old.Key]
			mw := false
			if m.owner == old.Owner {
				mw = m.wanted
				m.owner, m.wanted = "", false
				if mw || old.Key != req.Key {
					free(old.Key)
				}
			}
			if wanted != mw {
				t.Fatalf("relock wanted %v, model %v", wanted, mw)
			}
			if !mw {
				acq(req, l, err)
			}
		case 4:
			desc = "extend"
			if len(leases) == 0 {
				continue
			}
			l := leases[r.IntN(len(leases))]
			errs := b.Extend(ctx, []ctxlock.Lease{l}, ttl)
			m := model[l.Key]
			if m.owner == l.Owner {
				if errs[0] != nil {
					t.Fatalf("extend held: %v", errs[0])
				}
				m.expires = now().Add(ttl)
			} else if !errors.Is(errs[0], ctxlock.ErrLost) {
				t.Fatalf("extend lost: %v", errs[0])
			}
		case 5:
			desc = "evict"
			b.Evict(k)
			if m := model[k]; m.owner != "" {
				m.owner = ""
				free(k)
			}
		case 6:
			desc = "watch"
			ch, stop := b.Watch(k)
			watches = append(watches, &mWatch{key: k, ch: ch, stop: stop, active: true})
		case 7:
			desc = "stop"
			if len(watches) == 0 {
				continue
			}
			w := watches[r.IntN(len(watches))]
			w.stop()
			w.active = false
		case 8:
			desc = "sleep"
			time.Sleep(time.Second)
			synctest.Wait()
			lapse()
			// fresh keys, to sweep
			n++
			fk := fmt.Sprint("fresh/", n)
			if _, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: fk, Owner: "f", TTL: 100 * time.Millisecond}); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		for _, kk := range keys {
			if r.IntN(4) != 0 {
				continue
			}
			owner, _, _, _, ok := b.Holder(kk)
			if m := model[kk]; ok != (m.owner != "") || owner != m.owner {
				t.Fatalf("step %d (%s): Holder(%q) = %q %v, model %q", step, desc, kk, owner, ok, m.owner)
			}
		}
		for i, w := range watches {
			if !w.active {
				continue
			}
			got := false
			select {
			case <-w.ch:
				got = true
			default:
			}
			if w.pending && !got {
				t.Fatalf("step %d (%s): watcher %d of %q missed a notification", step, desc, i, w.key)
			}
			w.pending = false
		}
		b.mu.Lock()
		for kk, e := range b.keys {
			if e.timer != nil && len(e.watchers) == 0 {
				t.Fatalf("entry %q has a timer and no watchers", kk)
			}
			if e.owner != "" && len(e.watchers) > 0 && e.timer == nil {
				t.Fatalf("entry %q is held and watched but has no timer", kk)
			}
		}
		for _, kk := range keys {
			cnt := 0
			for _, w := range watches {
				if w.active && w.key == kk {
					cnt++
				}
			}
			e := b.keys[kk]
			if cnt > 0 && (e == nil || len(e.watchers) != cnt) {
				t.Fatalf("step %d (%s): %q watched %d times, entry %v", step, desc, kk, cnt, e)
			}
		}
		b.mu.Unlock()
	}
	for _, w := range watches {
		w.stop()
	}
}
