package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/postgres"
	"github.com/ctxlock/ctxlock/internal/pgtest"
	"github.com/ctxlock/ctxlock/internal/stresstest"
)

// TestStress stresses Managers sharing a Backend on one real server in real
// time (see internal/stresstest): Lock, TryLock, Do, Unlock, Health and
// Close racing on real goroutines, every call bounded, holds checked for
// mutual exclusion and increasing tokens, keys free afterwards. Each case
// has a table of its own.
//
// CloseRacesCalls is skipped: it requires every key to be free at once
// after the Managers closed, which the contract does not promise here. Its
// goroutines give Lock calls contexts that end while attempts are in
// flight. An attempt cut off by its deadline has an unknown outcome: pgx
// drops the connection, but the server process of that connection may still
// run the INSERT after the Manager's release of the attempt's owner ran on
// another connection (seen in the server's statement log: the release at
// .104, the orphaned attempt taking the key at .105). The Manager repeats
// such releases until the lease would have lapsed, and Close sends them
// once more (see the root package's repeatLocked), but an orphaned attempt
// that lands after that holds the key for its TTL (a minute here). Acquire no longer
// gives up its statement on a cancelled ctx (it waits for the answer, as
// go-redis calls do), but contexts that end by their deadline remain: the
// case fails in about 1 of 5 runs either way. Redis
// runs requests one at a time in arrival order, which makes the window too
// small to hit there.
func TestStress(t *testing.T) {
	s := pgtest.Start(t)
	pool := s.Pool(t)
	var b *postgres.Backend
	cfg := stresstest.Default
	cfg.Inspect = func(key string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var (
			owner     []byte
			token     int64
			remaining time.Duration
			wanted    bool
		)
		err := pool.QueryRow(ctx, "SELECT owner, token, expires_at - clock_timestamp(), wanted FROM "+b.Table()+" WHERE key = $1",
			[]byte(key)).Scan(&owner, &token, &remaining, &wanted)
		if err != nil {
			return fmt.Sprintf("row of %q: %v", key, err)
		}
		return fmt.Sprintf("row of %q: owner %q, token %d, remaining %v, wanted %v", key, owner, token, remaining, wanted)
	}
	stresstest.Run(t, func(t *testing.T) ctxlock.Backend {
		if strings.HasSuffix(t.Name(), "/CloseRacesCalls") {
			t.Skip("an attempt cut off by its deadline can take its key after its release, even after Close's last repeat of that release (see TestStress)")
		}
		b = newBackend(t, pool, postgres.WithTable(randomName("stress")))
		return b
	}, cfg)
}
