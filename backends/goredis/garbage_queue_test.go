package goredis_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// Garbage in a key's waiter-queue keys (the queue list, the entries hash),
// put there while the key is free or while it is held with a Lock waiting,
// never makes a Lock hang, panic or break mutual exclusion: the Lock fails
// at once with a permanent WRONGTYPE error, or the garbage is dropped (an
// entry whose deadline passed, or one a release cannot hand over to) and
// the Lock succeeds. A release failing mid-way leaves the lease to lapse at
// its TTL (accepted).
func TestGarbageWaiterQueue(t *testing.T) {
	s := redistest.StartServer(t)
	c := s.Client(t)
	ctx := context.Background()
	const ttl = time.Second
	type setup func(lk string) error
	list := func(ids ...string) setup {
		return func(lk string) error {
			args := make([]any, len(ids))
			for i, id := range ids {
				args[i] = id
			}
			return c.LPush(ctx, lk+":q", args...).Err() // ahead of any real waiter
		}
	}
	// entries writes the ghosts' entries, "<deadline>" first: a deadline
	// soon, so that the ghosts drop out.
	entries := func(kv ...string) setup {
		return func(lk string) error {
			soon := fmt.Sprint(time.Now().Add(300 * time.Millisecond).UnixMilli())
			args := make([]any, len(kv))
			for i, v := range kv {
				args[i] = strings.ReplaceAll(v, "<deadline>", soon)
			}
			return c.HSet(ctx, lk+":qd", args...).Err()
		}
	}
	both := func(ss ...setup) setup {
		return func(lk string) error {
			for _, f := range ss {
				if err := f(lk); err != nil {
					return err
				}
			}
			return nil
		}
	}
	// wrongType replaces a key in one transaction: a waiter's script may
	// write the key between a DEL and the write that follows it.
	wrongType := func(suffix string, set func(p redis.Pipeliner, k string)) setup {
		return func(lk string) error {
			_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Del(ctx, lk+suffix)
				set(p, lk+suffix)
				return nil
			})
			return err
		}
	}
	str := func(p redis.Pipeliner, k string) { p.Set(ctx, k, "x", 0) }
	set := func(p redis.Pipeliner, k string) { p.SAdd(ctx, k, "x") }
	hash := func(p redis.Pipeliner, k string) { p.HSet(ctx, k, "x", "y") }
	lst := func(p redis.Pipeliner, k string) { p.RPush(ctx, k, "x") }
	for _, tc := range []struct {
		name    string
		garbage setup
		// wrong: a wrong-type key the scripts touch: the Lock may fail
		// (with WRONGTYPE), never hang.
		wrong bool
	}{
		{"queue string", wrongType(":q", str), true},
		{"queue set", wrongType(":q", set), true},
		{"queue hash", wrongType(":q", hash), true},
		{"entries string", wrongType(":qd", str), true},
		{"entries list", wrongType(":qd", lst), true},
		{"entries set", wrongType(":qd", set), true},
		{"wanted list", wrongType(":wanted", lst), false},
		{"wanted hash", wrongType(":wanted", hash), false},
		{"ghost without entry", list("ghost", "ghost2"), false},
		{"ghost non-numeric", both(list("ghost"), entries("ghost", "garbage")), false},
		{"ghost empty entry", both(list("ghost"), entries("ghost", "")), false},
		{"ghost negative", both(list("ghost"), entries("ghost", "-5 100 inbox ")), false},
		{"ghost deadline only", both(list("ghost"), entries("ghost", "<deadline>")), false},
		{"ghost bad ttl", both(list("ghost"), entries("ghost", "<deadline> x inbox ")), false},
		{"ghost zero ttl", both(list("ghost"), entries("ghost", "<deadline> 0 inbox ")), false},
		{"ghost huge ttl", both(list("ghost"), entries("ghost", "<deadline> 99999999999999999999 inbox ")), false},
		{"ghost float deadline", both(list("ghost"), entries("ghost", "<deadline>.5e3 100 inbox ")), false},
		{"ghost meta without NUL", both(list("ghost"), entries("ghost", "<deadline> 100 inbox 7")), false},
		{"ghost no inbox", both(list("ghost"), entries("ghost", "<deadline> 100  ")), false},
		{"empty id", both(list(""), entries("", "<deadline> 100 inbox ")), false},
		{"hint field", entries("\x00hint", "garbage"), false},
		{"hint in queue", both(list("\x00hint"), entries("\x00hint", "ghost 1")), false},
		{"ghost twice", both(list("ghost", "ghost"), entries("ghost", "<deadline> 100 inbox ")), false},
	} {
		for _, phase := range []string{"free", "held"} {
			t.Run(tc.name+"/"+phase, func(t *testing.T) {
				key := "gq-" + strings.ReplaceAll(tc.name, " ", "-") + "-" + phase
				b := newBackend(t, c, goredis.WithWaiterKeep(2*time.Second))
				m := ctxlock.NewManager(b)
				m2 := ctxlock.NewManager(newBackend(t, s.Client(t), goredis.WithWaiterKeep(2*time.Second)))
				defer func() {
					cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					defer cancel()
					if err := m.Close(cctx); err != nil {
						t.Errorf("Close: %v", err)
					}
					if err := m2.Close(cctx); err != nil {
						t.Errorf("Close: %v", err)
					}
				}()
				lk, _, _ := b.Keys(key)
				defer c.Del(ctx, lk, lk+":q", lk+":qd", lk+":wanted", lk+":fence")
				lockOK := func(err error) bool {
					return err == nil || (tc.wrong && strings.Contains(err.Error(), "WRONGTYPE") && !errors.Is(err, context.DeadlineExceeded))
				}
				l := m.NewLock(key, ctxlock.WithTTL(ttl))
				if phase == "free" {
					if err := tc.garbage(lk); err != nil {
						t.Fatal(err)
					}
				}
				lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := l.Lock(lctx)
				cancel()
				if !lockOK(err) {
					t.Fatalf("Lock of a free key: %v", err)
				}
				if err != nil {
					return
				}
				first := l.Token()
				w := m2.NewLock(key, ctxlock.WithTTL(ttl))
				got := make(chan error, 1)
				go func() {
					wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					defer cancel()
					_, err := w.Lock(wctx)
					got <- err
				}()
				// Wait until the waiter has been refused (it queued).
				for c.LLen(ctx, lk+":q").Val() == 0 && c.Exists(ctx, lk+":wanted").Val() == 0 {
					select {
					case err := <-got:
						if err == nil || !lockOK(err) {
							t.Fatalf("waiter's Lock while held: %v", err)
						}
						return
					case <-time.After(5 * time.Millisecond): // polling the server until the waiter queues
					}
				}
				if phase == "held" {
					if err := tc.garbage(lk); err != nil {
						t.Fatal(err)
					}
				}
				select {
				case err := <-got:
					if err == nil {
						t.Fatal("the waiter's Lock succeeded while the key was held")
					}
					if !lockOK(err) {
						t.Fatalf("waiter's Lock while held: %v", err)
					}
					return
				default:
				}
				if l.Err() != nil {
					t.Fatalf("hold ended: %v", l.Err())
				}
				if err := l.Unlock(); err != nil {
					t.Fatal(err)
				}
				err = <-got
				if !lockOK(err) {
					t.Fatalf("waiter's Lock: %v", err)
				}
				if err != nil {
					return
				}
				if w.Token() <= first {
					t.Fatalf("waiter's token %d after %d", w.Token(), first)
				}
				if c.Exists(ctx, lk).Val() == 0 {
					t.Fatal("the waiter holds no lease")
				}
				if err := w.Unlock(); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}
