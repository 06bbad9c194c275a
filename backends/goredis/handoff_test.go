package goredis_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// handoffEnv is a key held by one Manager while a Lock call of another
// Manager (another process, in effect) waits in the server's queue.
type handoffEnv struct {
	t       *testing.T
	c       *redis.Client // an observer's client
	lockKey string
	holder  ctxlock.Lock
	waiter  ctxlock.Lock
	wid     string           // the waiting call's id in the server's queue
	counter *pipelineCounter // commands sent by the waiter's client
	inbox   string           // where the waiter's process hears its hand-offs
	got     chan error       // the waiting Lock call's result
}

func newHandoffEnv(t *testing.T, keep time.Duration, opts ...ctxlock.LockOption) *handoffEnv {
	return newHandoffEnvWith(t, keep, nil, opts...)
}

// newHandoffEnvWith is newHandoffEnv with Backend options for both Managers.
func newHandoffEnvWith(t *testing.T, keep time.Duration, bopts []goredis.Option, opts ...ctxlock.LockOption) *handoffEnv {
	s := redistest.StartServer(t)
	e := &handoffEnv{t: t, c: s.Client(t), counter: &pipelineCounter{}, got: make(chan error, 1)}
	newManager := func(c redis.UniversalClient) (*ctxlock.Manager, *goredis.Backend) {
		b := newBackend(t, c, append([]goredis.Option{goredis.WithWaiterKeep(keep)}, bopts...)...)
		m := ctxlock.NewManager(b)
		t.Cleanup(func() { m.Close(context.Background()) })
		return m, b
	}
	mh, _ := newManager(s.Client(t))
	wc := s.Client(t)
	wc.AddHook(e.counter)
	mw, bw := newManager(wc)
	e.lockKey, _, _ = bw.Keys("h")
	e.inbox = bw.Inbox()
	e.holder = mh.NewLock("h")
	if _, err := e.holder.Lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.waiter = mw.NewLock("h", opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	go func() {
		_, err := e.waiter.Lock(ctx)
		e.got <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for e.wid == "" {
		ids, err := e.c.LRange(context.Background(), e.lockKey+":q", 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) > 0 {
			e.wid = ids[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the waiter did not queue")
		}
		time.Sleep(time.Millisecond) // polling the server's state, not synchronising goroutines
	}
	for {
		subs, err := e.c.PubSubNumSub(context.Background(), e.inbox).Result()
		if err != nil {
			t.Fatal(err)
		}
		if subs[e.inbox] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the waiter's process did not subscribe to its inbox")
		}
		time.Sleep(time.Millisecond) // polling the server's state
	}
	return e
}

func (e *handoffEnv) acquired() {
	e.t.Helper()
	select {
	case err := <-e.got:
		if err != nil {
			e.t.Fatalf("waiter's Lock: %v", err)
		}
	case <-time.After(10 * time.Second):
		e.t.Fatal("waiter's Lock did not return after the release")
	}
}

// A release hands the key to the waiting Lock call of another Manager: the
// lease is the waiter's (its queue id owns the key) and carries the next
// fencing token, so the waiter did not acquire it with an attempt of its own.
func TestHandoffGrantsLeaseToWaiter(t *testing.T) {
	e := newHandoffEnv(t, goredis.DefaultWaiterKeep)
	held := e.holder.Token()
	e.holder.Unlock()
	e.acquired()
	v, err := e.c.Get(context.Background(), e.lockKey).Result()
	if want := ctxlock.GrantOwner(e.wid, held+1); err != nil || v != want {
		t.Fatalf("lock value = %q, %v; want %q, a grant to the waiter's queue id (not an acquire)", v, err, want)
	}
	if got := e.waiter.Token(); got != held+1 {
		t.Fatalf("waiter's token %d; want the next one, %d", got, held+1)
	}
	e.waiter.Unlock()
}

// A grant notification whose token is not above the fencing counter of a
// refusal the waiter saw later is stale: the Manager retries instead of
// taking it, and later takes the real grant.
func TestHandoffStaleGrantIgnored(t *testing.T) {
	e := newHandoffEnv(t, goredis.DefaultWaiterKeep)
	held := e.holder.Token()
	sent := func() int64 { return e.counter.single.Load() + e.counter.cmds.Load() }
	before := sent()
	// What a hand-off that lapsed before the waiter's last refusal looks like.
	n, err := e.c.Publish(context.Background(), e.inbox, fmt.Sprintf("%d 5000 %s", held, e.wid)).Result()
	if err != nil || n != 1 {
		t.Fatalf("PUBLISH on the waiter's inbox reached %d subscribers (%v); want 1", n, err)
	}
	// The Manager treats it as a hint: it retries (and is refused) at once.
	deadline := time.Now().Add(5 * time.Second)
	for sent() == before {
		if time.Now().After(deadline) {
			t.Fatal("the waiter did not retry after the stale grant")
		}
		time.Sleep(time.Millisecond) // polling a counter, not synchronising goroutines
	}
	select {
	case err := <-e.got:
		t.Fatalf("waiter's Lock returned (%v) on a stale grant", err)
	default:
	}
	e.holder.Unlock()
	e.acquired()
	if got := e.waiter.Token(); got != held+1 {
		t.Fatalf("waiter's token %d; want %d (the real grant)", got, held+1)
	}
	e.waiter.Unlock()
}

// A grant is at most the waiter keep time long (a waiter that died while
// queued holds the key no longer than its place); the Manager renews it to
// the lock's TTL: at once for a lock without refreshes, soon by the
// scheduler otherwise.
func TestHandoffShortGrantRenewed(t *testing.T) {
	const keep = time.Second
	for _, tc := range []struct {
		name string
		opts []ctxlock.LockOption
	}{
		{"refreshed", []ctxlock.LockOption{ctxlock.WithTTL(10 * time.Second)}},
		{"no refresh", []ctxlock.LockOption{ctxlock.WithTTL(10 * time.Second), ctxlock.WithoutRefresh()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newHandoffEnv(t, keep, tc.opts...)
			e.holder.Unlock()
			e.acquired()
			deadline := time.Now().Add(5 * time.Second)
			for {
				pttl, err := e.c.PTTL(context.Background(), e.lockKey).Result()
				if err != nil {
					t.Fatal(err)
				}
				if pttl > 2*keep {
					break // renewed beyond the grant
				}
				if tc.name == "no refresh" {
					t.Fatalf("PTTL %v right after Lock returned; want the lock's TTL", pttl)
				}
				if time.Now().After(deadline) {
					t.Fatalf("PTTL still %v: the short grant was not renewed", pttl)
				}
				time.Sleep(10 * time.Millisecond) // polling the server's state
			}
			if err := e.waiter.Err(); err != nil {
				t.Fatalf("hold ended: %v", err)
			}
			e.waiter.Unlock()
		})
	}
}
