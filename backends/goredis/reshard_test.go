package goredis_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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
