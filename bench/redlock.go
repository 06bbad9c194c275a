package main

import (
	"fmt"
	"io"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/redlock"
)

// ctxlockRedlockImpl is ctxlock over backends/redlock on every address.
func ctxlockRedlockImpl() Impl {
	return Impl{Name: "ctxlock redlock", Base: true, New: func(addrs []string, cnt *cmdCounter, ttl time.Duration) (Locker, error) {
		var clients []redis.UniversalClient
		closeAll := func() {
			for _, c := range clients {
				c.Close()
			}
		}
		for _, a := range addrs {
			c, err := newGoRedisOpts(&redis.Options{Addr: a, ContextTimeoutEnabled: true}, cnt)
			if err != nil {
				closeAll()
				return nil, err
			}
			clients = append(clients, c)
		}
		b, err := redlock.New(clients)
		if err != nil {
			closeAll()
			return nil, err
		}
		var opts []ctxlock.LockOption
		if ttl > 0 {
			opts = append(opts, ctxlock.WithTTL(ttl))
		}
		return &ctxLocker{m: ctxlock.NewManager(b), close: func() { b.Close(); closeAll() }, opts: opts}, nil
	}}
}

// sectionD compares ctxlock's backends/redlock with redsync on n independent
// servers, scenarios (a) and (b).
func sectionD(w io.Writer, n, runs, g int, holds []time.Duration, durA, durB time.Duration) {
	var addrs []string
	for range n {
		s, err := startRedis()
		if err != nil {
			fmt.Fprintf(w, "### (d) Redlock: not run: %v\n\n", err)
			return
		}
		defer s.Stop()
		addrs = append(addrs, s.Addr)
	}
	e := newEnv(addrs)
	defer e.close()
	impls := []Impl{
		ctxlockRedlockImpl(),
		redsyncImpl("redsync", true),
		redsyncImpl("redsync 10ms", false, redsyncTuned()...),
	}
	sectionA(w, e, baseImpls(impls), runs, g, durA, fmt.Sprintf("(d) Redlock on %d nodes, uncontended", n))
	sectionB(w, e, impls, runs, g, holds, durB, fmt.Sprintf("(d) Redlock on %d nodes, contended", n))
}
