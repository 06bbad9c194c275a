package goredis_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/locktest"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// A key's slot moves between two masters again and again while Managers on
// different clients contend for the key and refresh their holds: commands
// meet ASK redirections and TRYAGAIN replies (a script whose keys are split
// between the two nodes) and the slot's new owner. Holds never overlap,
// tokens increase, no Lock fails, and the key is taken after the last move.
func TestClusterReshardingUnderContention(t *testing.T) {
	cl := redistest.StartCluster(t, 2)
	const (
		ttl      = 150 * time.Millisecond // refreshed every 50ms: holds of up to 120ms see a few
		managers = 2
		each     = 2 // goroutines per Manager
		moves    = 6
	)
	ms := make([]*ctxlock.Manager, managers)
	for i := range ms {
		ms[i] = ctxlock.NewManager(newBackend(t, cl.Client(t)))
	}
	lk, _, _ := newBackend(t, cl.Client(t)).Keys("r")
	slot, err := cl.Client(t).ClusterKeySlot(context.Background(), lk).Result()
	if err != nil {
		t.Fatal(err)
	}

	var (
		checker   locktest.Checker
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		mu        sync.Mutex
		afterLast int // holds started after the last move
		lastMove  time.Time
	)
	for i, m := range ms {
		for g := range each {
			wg.Add(1)
			go func() {
				defer wg.Done()
				owner := fmt.Sprintf("m%d/g%d", i, g)
				l := m.NewLock("r", ctxlock.WithTTL(ttl))
				for {
					select {
					case <-stop:
						return
					default:
					}
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					expired, err := l.Lock(ctx)
					cancel()
					if err != nil {
						t.Errorf("%s: Lock: %v", owner, err)
						return
					}
					start := time.Now()
					token := l.Token()
					hold := time.NewTimer(time.Duration(rand.IntN(120)) * time.Millisecond)
					end := time.Time{}
					select {
					case <-hold.C:
						end = time.Now()
						if err := l.Unlock(); err != nil && !errors.Is(err, ctxlock.ErrNotHeld) {
							t.Errorf("%s: Unlock: %v", owner, err)
						}
					case <-expired:
						end = time.Now()
						hold.Stop()
					}
					checker.Record(locktest.Hold{Key: "r", Owner: owner, Token: token, Start: start, End: end})
					mu.Lock()
					if !lastMove.IsZero() && start.After(lastMove) {
						afterLast++
					}
					mu.Unlock()
				}
			}()
		}
	}

	for i := range moves {
		cl.MoveSlot(t, int(slot), cl.Node((i+1)%2), 100*time.Millisecond)
	}
	mu.Lock()
	lastMove = time.Now()
	mu.Unlock()
	// Holds made on the slot's final owner, by every goroutine in turn.
	deadline := time.After(10 * time.Second)
	for {
		mu.Lock()
		n := afterLast
		mu.Unlock()
		if n >= 2*managers*each {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("only %d holds after the last move in 10s", n)
		case <-time.After(10 * time.Millisecond): // polling the contenders' progress
		}
	}
	close(stop)
	wg.Wait()
	n := checker.Check(t)
	redirects := map[string]int{}
	for _, nd := range cl.Nodes() {
		info, err := nd.Client(t).Info(context.Background(), "errorstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, kind := range []string{"TRYAGAIN", "ASK", "MOVED"} {
			var c int
			if i := strings.Index(info, "errorstat_"+kind+":count="); i >= 0 {
				fmt.Sscanf(info[i+len("errorstat_"+kind+":count="):], "%d", &c)
			}
			redirects[kind] += c
		}
	}
	t.Logf("%d holds over %d moves of slot %d; the servers replied TRYAGAIN %d, ASK %d, MOVED %d times",
		n, moves, slot, redirects["TRYAGAIN"], redirects["ASK"], redirects["MOVED"])
	for _, m := range ms {
		if err := m.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
}

// While a slot migrates, the old owner runs a script only if every key it
// names is there, and fails any command of it on a key that no longer is
// (after the commands before it took effect). A release, a relock and a
// leave that hand the key to the next waiter on such a slot must not delete
// the lock key and write it again: each succeeds and the waiter holds the
// key.
func TestScriptsOnMigratingSlot(t *testing.T) {
	cl := redistest.StartCluster(t, 2)
	c := cl.Client(t)
	b := newBackend(t, c)
	ctx := context.Background()
	const ttl = 10 * time.Second
	for _, op := range []string{"release", "relock", "leave"} {
		t.Run(op, func(t *testing.T) {
			key := "migrating-" + op
			holder := acquire(t, b, key, ttl)
			for _, w := range []string{"w1", "w2"} {
				_, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: key, Owner: owner(), TTL: ttl, Timeout: time.Second, Waiter: w})
				if !errors.Is(err, ctxlock.ErrHeld) {
					t.Fatalf("the acquire that queues %s: %v; want ErrHeld", w, err)
				}
			}
			lk, fk, _ := b.Keys(key)
			from := cl.MasterFor(t, lk)
			fc := from.Client(t)
			for _, k := range []string{lk, fk, lk + ":wanted", lk + ":q", lk + ":qd"} {
				if n, err := fc.Exists(ctx, k).Result(); err != nil || n != 1 {
					t.Fatalf("precondition: %s exists = %d, %v; the scripts would get TRYAGAIN instead of running", k, n, err)
				}
			}
			slot, err := c.ClusterKeySlot(ctx, lk).Result()
			if err != nil {
				t.Fatal(err)
			}
			to := cl.Node(0)
			if to == from {
				to = cl.Node(1)
			}
			move := cl.BeginMove(t, int(slot), to)

			next := "w1"
			switch op {
			case "release":
				if errs := b.Release(ctx, []ctxlock.Lease{holder}); errs[0] != nil {
					t.Fatalf("Release on a migrating slot: %v", errs[0])
				}
			case "relock":
				_, wanted, _, err := b.Relock(ctx, holder, ctxlock.AcquireRequest{Key: key, Owner: owner(), TTL: ttl, Timeout: time.Second, Waiter: "w3"})
				if err != nil || !wanted {
					t.Fatalf("Relock on a migrating slot = wanted %v, %v; want true, nil", wanted, err)
				}
				q, err := fc.LRange(ctx, lk+":q", 0, -1).Result()
				if err != nil || !slices.Equal(q, []string{"w2", "w3"}) {
					t.Fatalf("queue after the relock = %v, %v; want [w2 w3]", q, err)
				}
			case "leave":
				if errs := b.Release(ctx, []ctxlock.Lease{holder}); errs[0] != nil {
					t.Fatalf("Release on a migrating slot: %v", errs[0])
				}
				if err := b.Leave(ctx, key, "w1"); err != nil {
					t.Fatalf("Leave of the waiter granted the key, on a migrating slot: %v", err)
				}
				next = "w2"
			}
			if v, err := fc.Get(ctx, lk).Result(); err != nil || !strings.HasPrefix(v, next+":") {
				t.Fatalf("the lock key after the %s = %q, %v; want a lease granted to %s", op, v, err, next)
			}
			move.Finish(t, 0)
		})
	}
}
