package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/postgres"
	"github.com/ctxlock/ctxlock/internal/pgtest"
)

func owner() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func acquire(t *testing.T, b ctxlock.Backend, key string, ttl time.Duration) ctxlock.Lease {
	t.Helper()
	l, err := b.Acquire(testCtx(t, 30*time.Second), ctxlock.AcquireRequest{Key: key, Owner: owner(), TTL: ttl, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("Acquire(%q): %v", key, err)
	}
	return l
}

func release(t *testing.T, b ctxlock.Backend, l ctxlock.Lease) {
	t.Helper()
	if errs := b.Release(testCtx(t, 30*time.Second), []ctxlock.Lease{l}); len(errs) != 1 || errs[0] != nil {
		t.Fatalf("Release(%q): %v", l.Key, errs)
	}
}

// Tokens are strictly increasing per key, across releases, lapses, a
// server crash (SIGKILL) and restart, and the pruning of a free key's row.
func TestTokensIncreaseAcrossRestartAndPrune(t *testing.T) {
	s := pgtest.Start(t)
	pool := s.Pool(t)
	b := newBackend(t, pool, postgres.WithTable(randomName("tokens")))
	var last uint64
	next := func(what string) ctxlock.Lease {
		t.Helper()
		l := acquire(t, b, "k", 10*time.Second)
		if l.Token <= last {
			t.Fatalf("%s: token %d, not above %d", what, l.Token, last)
		}
		last = l.Token
		return l
	}
	for i := range 5 {
		release(t, b, next(fmt.Sprint("acquire ", i)))
	}
	next("after releases") // held across the crash

	s.Kill()
	s.Restart()
	// The pool's connections died with the server: the first calls may
	// fail, as ErrUnavailable, until it reconnects.
	deadline := time.Now().Add(20 * time.Second)
	for {
		l, err := b.Acquire(testCtx(t, 30*time.Second), ctxlock.AcquireRequest{Key: "k2", Owner: owner(), TTL: time.Second, Timeout: 2 * time.Second})
		if err == nil {
			release(t, b, l)
			break
		}
		if !errors.Is(err, ctxlock.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("Acquire after restart: %v; want success (or ErrUnavailable while reconnecting)", err)
		}
	}
	// "k" is still held (10s TTL) after the restart: the lease survived.
	if _, err := b.Acquire(testCtx(t, 30*time.Second), ctxlock.AcquireRequest{Key: "k", Owner: owner(), TTL: time.Second, Timeout: 5 * time.Second}); !errors.Is(err, ctxlock.ErrHeld) {
		t.Fatalf("Acquire of a key held before the crash: %v; want ErrHeld", err)
	}
	// Free it, and prune its row as an operator might.
	if _, err := pool.Exec(testCtx(t, 10*time.Second), "DELETE FROM "+b.Table()+" WHERE key = $1", []byte("k")); err != nil {
		t.Fatal(err)
	}
	next("after pruning the row")
}

// Keys and owners are opaque bytes: NUL and invalid UTF-8 work, and so does
// such metadata (stored as text, with U+FFFD for what text cannot hold).
func TestBinaryKeysAndMetadata(t *testing.T) {
	s := pgtest.Start(t)
	pool := s.Pool(t)
	b := newBackend(t, pool, postgres.WithTable(randomName("binary")))
	key := "a\x00b\xff\xfe" + strings.Repeat("x", ctxlock.MaxKeyLength-5)
	ctx := testCtx(t, 30*time.Second)
	req := ctxlock.AcquireRequest{Key: key, Owner: "o\x00\xff", TTL: 10 * time.Second, Timeout: 5 * time.Second, Metadata: "m\x00\xff"}
	l, err := b.Acquire(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: "a", Owner: owner(), TTL: time.Second}); err != nil {
		t.Fatalf("a prefix of the key is another key: %v", err)
	}
	var md string
	if err := pool.QueryRow(ctx, "SELECT metadata FROM "+b.Table()+" WHERE key = $1", []byte(key)).Scan(&md); err != nil || md != "m\uFFFD\uFFFD" {
		t.Fatalf("metadata %q, %v", md, err)
	}
	if errs := b.Extend(ctx, []ctxlock.Lease{l}, time.Second); errs[0] != nil {
		t.Fatal(errs[0])
	}
	ch, stop := b.Watch(key)
	defer stop()
	// The listener's first LISTEN wakes every watcher: wait for it, so that
	// only the release's notification can wake this one.
	pollUntil(t, 10*time.Second, "the listener", func() bool { return healthy(t, b) })
	drain(ch)
	release(t, b, l)
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatal("no notification for the release of a binary key")
	}
}

func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// A retried Acquire of the same owner (its first attempt succeeded but the
// answer was lost) gets its lease again, same token; another owner is
// refused with the remaining TTL and marks the lease wanted.
func TestAcquireSameOwnerAndRefusal(t *testing.T) {
	s := pgtest.Start(t)
	pool := s.Pool(t)
	b := newBackend(t, pool, postgres.WithTable(randomName("retry")))
	ctx := testCtx(t, 30*time.Second)
	req := ctxlock.AcquireRequest{Key: "k", Owner: owner(), TTL: 10 * time.Second, Timeout: 5 * time.Second}
	l1, err := b.Acquire(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := b.Acquire(ctx, req)
	if err != nil || l2 != l1 {
		t.Fatalf("retried Acquire = %+v, %v; want %+v", l2, err, l1)
	}
	_, err = b.Acquire(ctx, ctxlock.AcquireRequest{Key: "k", Owner: owner(), TTL: time.Second, Timeout: 5 * time.Second})
	var held *ctxlock.HeldError
	if !errors.As(err, &held) || held.Remaining <= 5*time.Second || held.Remaining > 10*time.Second {
		t.Fatalf("Acquire by another owner = %v; want a HeldError with about 10s remaining", err)
	}
	errs, contended := b.ReleaseContended(ctx, []ctxlock.Lease{l1})
	if errs[0] != nil || len(contended) != 1 || !contended[0] {
		t.Fatalf("ReleaseContended = %v, %v; want [nil], [true]", errs, contended)
	}
	// Released: a second release of the same lease is harmless.
	if errs, contended := b.ReleaseContended(ctx, []ctxlock.Lease{l1}); errs[0] != nil || contended != nil {
		t.Fatalf("second release = %v, %v", errs, contended)
	}
}

// Bad names are refused by New, before any I/O.
func TestBadNames(t *testing.T) {
	s := pgtest.Start(t)
	pool := s.Pool(t)
	ctx := testCtx(t, 10*time.Second)
	for _, opt := range []postgres.Option{
		postgres.WithTable(""),
		postgres.WithTable("leases; DROP TABLE x"),
		postgres.WithTable("a.b.c"),
		postgres.WithTable("1abc"),
		postgres.WithTable(`"quoted"`),
		postgres.WithTable(strings.Repeat("a", 64)),
		postgres.WithTable("s."),
		postgres.WithChannel("a-b"),
		postgres.WithChannel("s.c"),
	} {
		if b, err := postgres.New(ctx, pool, opt); !errors.Is(err, ctxlock.ErrInvalidOption) {
			if b != nil {
				_ = b.Close()
			}
			t.Errorf("New with a bad name: %v; want ErrInvalidOption", err)
		}
	}
	if _, err := postgres.New(ctx, nil); !errors.Is(err, ctxlock.ErrInvalidOption) {
		t.Errorf("New(nil pool): %v; want ErrInvalidOption", err)
	}
	if _, err := postgres.CreateTableSQL("x y"); !errors.Is(err, ctxlock.ErrInvalidOption) {
		t.Errorf("CreateTableSQL(bad): %v; want ErrInvalidOption", err)
	}
}

// With WithoutCreateTable and no table, Lock fails at once with a
// permanent error that says what is wrong; it is not retried until the
// context ends.
func TestMissingTableIsPermanent(t *testing.T) {
	s := pgtest.Start(t)
	pool := s.Pool(t)
	b := newBackend(t, pool, postgres.WithTable(randomName("missing")), postgres.WithoutCreateTable())
	m := ctxlock.NewManager(b)
	defer m.Close(context.Background())
	ctx := testCtx(t, 30*time.Second)
	_, err := m.NewLock("k").Lock(ctx)
	if err == nil || errors.Is(err, ctxlock.ErrUnavailable) || ctx.Err() != nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Lock without a table = %v (ctx %v); want a permanent error saying the table does not exist", err, ctx.Err())
	}
}

// CreateTableSQL is the DDL New runs: applied by hand (in a schema), a
// Backend WithoutCreateTable works on it.
func TestCreateTableSQLSchemaQualified(t *testing.T) {
	s := pgtest.Start(t)
	pool := s.Pool(t)
	ctx := testCtx(t, 30*time.Second)
	ddl, err := postgres.CreateTableSQL("locks.leases")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "CREATE SCHEMA locks"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, ddl); err != nil {
		t.Fatalf("%s: %v", ddl, err)
	}
	b := newBackend(t, pool, postgres.WithTable("locks.leases"), postgres.WithoutCreateTable())
	if b.Table() != `"locks"."leases"` {
		t.Errorf("Table() = %s", b.Table())
	}
	release(t, b, acquire(t, b, "k", time.Second))
	// New is idempotent on an existing table.
	newBackend(t, pool, postgres.WithTable("locks.leases"))
}

// An Acquire sent to a frozen server times out after req.Timeout with an
// unknown outcome: ErrUnavailable. Health fails too; both come back after
// the server does.
func TestFrozenServerUnavailable(t *testing.T) {
	s := pgtest.Start(t)
	pool := s.Pool(t)
	b := newBackend(t, pool, postgres.WithTable(randomName("frozen")))
	release(t, b, acquire(t, b, "warm", time.Second)) // a pooled connection
	s.Stop()
	start := time.Now()
	_, err := b.Acquire(testCtx(t, 30*time.Second), ctxlock.AcquireRequest{Key: "k", Owner: owner(), TTL: time.Second, Timeout: 200 * time.Millisecond})
	took := time.Since(start)
	hctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, herr := b.Health(hctx)
	cancel()
	s.Cont()
	if !errors.Is(err, ctxlock.ErrUnavailable) || took > 5*time.Second {
		t.Fatalf("Acquire on a frozen server = %v after %v; want ErrUnavailable after about 200ms", err, took)
	}
	if herr == nil {
		t.Fatal("Health of a frozen server: nil error")
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		conds, err := b.Health(testCtx(t, 5*time.Second))
		if err == nil && len(conds) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Health after Cont: %v, %v", conds, err)
		}
		time.Sleep(20 * time.Millisecond) // polling the server's recovery
	}
}

// After Close: calls fail with ErrClosed, Watch returns a nil channel, and
// the pool is still the caller's.
func TestClose(t *testing.T) {
	s := pgtest.Start(t)
	pool := s.Pool(t)
	b := newBackend(t, pool, postgres.WithTable(randomName("close")))
	ch, stop := b.Watch("k") // starts the listener, which Close stops
	if ch == nil {
		t.Fatal("Watch: nil channel")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	stop()
	ctx := testCtx(t, 10*time.Second)
	if _, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: "k", Owner: "o", TTL: time.Second}); !errors.Is(err, postgres.ErrClosed) {
		t.Errorf("Acquire after Close: %v", err)
	}
	if errs := b.Extend(ctx, []ctxlock.Lease{{Key: "k", Owner: "o", Token: 1}}, time.Second); !errors.Is(errs[0], postgres.ErrClosed) {
		t.Errorf("Extend after Close: %v", errs)
	}
	if errs := b.Release(ctx, []ctxlock.Lease{{Key: "k", Owner: "o", Token: 1}}); !errors.Is(errs[0], postgres.ErrClosed) {
		t.Errorf("Release after Close: %v", errs)
	}
	if _, err := b.Health(ctx); !errors.Is(err, postgres.ErrClosed) {
		t.Errorf("Health after Close: %v", err)
	}
	if ch, stop := b.Watch("k"); ch != nil || stop == nil {
		t.Errorf("Watch after Close: %v", ch)
	} else {
		stop()
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := pool.Ping(ctx); err != nil {
		t.Errorf("the pool after Close: %v", err)
	}
}

// Processes starting together each run New's CREATE TABLE IF NOT EXISTS on
// a fresh database; PostgreSQL may then report a catalog conflict to all
// but one, which New takes as the table existing.
func TestConcurrentNewCreatesTableOnce(t *testing.T) {
	s := pgtest.Start(t)
	pool := s.Pool(t)
	for round := range 3 {
		table := randomName(fmt.Sprint("race", round))
		errs := make(chan error, 8)
		for range cap(errs) {
			go func() {
				b, err := postgres.New(testCtx(t, 30*time.Second), pool, postgres.WithTable(table))
				if err == nil {
					_ = b.Close()
				}
				errs <- err
			}()
		}
		for range cap(errs) {
			if err := <-errs; err != nil {
				t.Fatalf("concurrent New: %v", err)
			}
		}
	}
}
