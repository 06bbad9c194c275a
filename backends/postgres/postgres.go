package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/puddle/v2"

	"github.com/ctxlock/ctxlock"
)

// Defaults of the options.
const (
	// DefaultTable is the lease table's name unless WithTable says otherwise.
	DefaultTable = "ctxlock_leases"
	// DefaultChannel is the LISTEN/NOTIFY channel unless WithChannel says
	// otherwise.
	DefaultChannel = "ctxlock_release"
	// ListenerApplicationName is the application_name of the Backend's
	// listening connection, as pg_stat_activity shows it.
	ListenerApplicationName = "ctxlock-listener"
)

// ErrClosed is returned by every call on a closed Backend.
var ErrClosed = errors.New("postgres: backend closed")

// Option configures New.
type Option func(*config)

type config struct {
	table, channel string
	noCreate       bool
}

// WithTable sets the lease table: a plain identifier (letters, digits,
// underscores, not starting with a digit, at most 63 bytes), optionally
// qualified by a schema ("locks.leases"). Names are quoted as given, so
// "Leases" and "leases" are different tables; lower case matches what
// unquoted SQL means. The default is DefaultTable.
func WithTable(name string) Option { return func(c *config) { c.table = name } }

// WithChannel sets the LISTEN/NOTIFY channel on which releases are
// announced (a plain identifier, as for WithTable but without a schema).
// Backends sharing a table must share the channel. The default is
// DefaultChannel.
func WithChannel(name string) Option { return func(c *config) { c.channel = name } }

// WithoutCreateTable makes New do no DDL: the table must exist (see
// CreateTableSQL), for databases where the application's role may not
// create tables.
func WithoutCreateTable() Option { return func(c *config) { c.noCreate = true } }

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// parseTable validates a table name and returns it quoted.
func parseTable(name string) (string, error) {
	parts := strings.Split(name, ".")
	if len(parts) > 2 {
		return "", fmt.Errorf("postgres: %w: table name %q: at most schema.table", ctxlock.ErrInvalidOption, name)
	}
	for _, p := range parts {
		if !identRE.MatchString(p) {
			return "", fmt.Errorf("postgres: %w: table name %q: want a plain identifier ([A-Za-z_][A-Za-z0-9_]*, at most 63 bytes), optionally schema-qualified", ctxlock.ErrInvalidOption, name)
		}
	}
	return pgx.Identifier(parts).Sanitize(), nil
}

// CreateTableSQL returns the DDL of the lease table named table (as
// WithTable takes it): what New runs unless WithoutCreateTable is given, for
// DBAs to apply by hand. It is idempotent (IF NOT EXISTS).
func CreateTableSQL(table string) (string, error) {
	t, err := parseTable(table)
	if err != nil {
		return "", err
	}
	return createTableSQL(t), nil
}

func createTableSQL(t string) string {
	return `CREATE TABLE IF NOT EXISTS ` + t + ` (
	key        bytea       PRIMARY KEY,
	owner      bytea,
	token      bigint      NOT NULL,
	expires_at timestamptz NOT NULL,
	wanted     boolean     NOT NULL DEFAULT false,
	metadata   text        NOT NULL DEFAULT ''
)`
}

// Backend is a ctxlock.Backend on a PostgreSQL table. Make it with New.
type Backend struct {
	pool       *pgxpool.Pool
	table      string // quoted
	channel    string // as given: pg_notify's argument
	listenSQL  string
	acquireSQL string
	extendSQL  string
	releaseSQL string
	relockSQL  string

	ctx    context.Context // ended by Close: stops the listener
	cancel context.CancelFunc

	mu         sync.Mutex
	closed     bool
	watchers   map[string]map[*watcher]struct{} // by notification payload (keyDigest)
	listening  bool                             // the listener goroutine was started
	listenDone chan struct{}                    // closed when it returns
	listenErr  error                            // why the listener is not listening now; nil when it is
	listenUp   bool                             // LISTEN is in force
}

type watcher struct{ ch chan struct{} }

var (
	_ ctxlock.Backend            = (*Backend)(nil)
	_ ctxlock.ContentionReporter = (*Backend)(nil)
	_ ctxlock.Relocker           = (*Backend)(nil)
	_ ctxlock.BackendNamer       = (*Backend)(nil)
)

// New returns a Backend storing leases in a table of pool's database,
// creating the table (CREATE TABLE IF NOT EXISTS) unless WithoutCreateTable
// is given. The caller owns pool: Close does not close it, and the pool
// must outlive the Backend. New fails on invalid options and when the DDL
// fails; it does not check that a table it did not create exists (the
// first Lock does, with a permanent error).
func New(ctx context.Context, pool *pgxpool.Pool, opts ...Option) (*Backend, error) {
	if pool == nil {
		return nil, fmt.Errorf("postgres: %w: nil pool", ctxlock.ErrInvalidOption)
	}
	cfg := config{table: DefaultTable, channel: DefaultChannel}
	for _, o := range opts {
		o(&cfg)
	}
	table, err := parseTable(cfg.table)
	if err != nil {
		return nil, err
	}
	if !identRE.MatchString(cfg.channel) {
		return nil, fmt.Errorf("postgres: %w: channel name %q: want a plain identifier ([A-Za-z_][A-Za-z0-9_]*, at most 63 bytes)", ctxlock.ErrInvalidOption, cfg.channel)
	}
	if !cfg.noCreate {
		if _, err := pool.Exec(ctx, createTableSQL(table)); err != nil && !createdConcurrently(err) {
			return nil, classify("create table "+table, err)
		}
	}
	b := &Backend{
		pool:       pool,
		table:      table,
		channel:    cfg.channel,
		listenSQL:  "LISTEN " + pgx.Identifier{cfg.channel}.Sanitize(),
		acquireSQL: fmt.Sprintf(acquireSQL, table),
		extendSQL:  fmt.Sprintf(extendSQL, table),
		releaseSQL: fmt.Sprintf(releaseSQL, table),
		relockSQL:  fmt.Sprintf(relockSQL, table),
		watchers:   make(map[string]map[*watcher]struct{}),
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return b, nil
}

// createdConcurrently reports whether CREATE TABLE IF NOT EXISTS failed
// because another session created the table at the same time (PostgreSQL
// then reports a unique violation on its catalog, 42P07 or 42710): the table
// exists, which is all New wants.
func createdConcurrently(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "23505" || pgErr.Code == "42P07" || pgErr.Code == "42710")
}

// Table returns the lease table's name, quoted as it appears in SQL.
func (b *Backend) Table() string { return b.table }

// BackendName returns "postgres".
func (b *Backend) BackendName() string { return "postgres" }

// acquireSQL takes a key in one statement. now is read once (in the
// inserted row's expires_at, minus the TTL) so that every branch agrees on
// whether the held lease has lapsed. A key is taken when it is free or its
// lease lapsed (a new token: above the last one, and at least the server's
// clock in µs, so that a key whose row was pruned starts above its old
// tokens); renewed, token kept, when the caller already owns it (a retried
// attempt that had succeeded); otherwise it is refused and marked wanted.
// $1 key, $2 owner, $3 TTL in µs, $4 metadata.
const acquireSQL = `INSERT INTO %[1]s AS t (key, owner, token, expires_at, metadata, wanted)
SELECT $1::bytea, $2::bytea, (extract(epoch FROM n.now) * 1000000)::bigint,
	n.now + $3::bigint * interval '1 microsecond', $4::text, false
FROM (SELECT clock_timestamp() AS now) AS n
ON CONFLICT (key) DO UPDATE SET
	owner = CASE WHEN ` + free + ` THEN excluded.owner ELSE t.owner END,
	token = CASE WHEN ` + free + ` THEN greatest(t.token + 1, excluded.token) ELSE t.token END,
	expires_at = CASE WHEN ` + free + ` OR t.owner = excluded.owner THEN excluded.expires_at ELSE t.expires_at END,
	metadata = CASE WHEN ` + free + ` THEN excluded.metadata ELSE t.metadata END,
	wanted = CASE WHEN ` + free + ` THEN false WHEN t.owner = excluded.owner THEN t.wanted ELSE true END
RETURNING t.owner = $2::bytea, t.token,
	greatest(extract(epoch FROM t.expires_at - clock_timestamp()) * 1000000, 0)::bigint`

// free: the existing row is free or its lease has lapsed, at the insert's now.
const free = `(t.owner IS NULL OR t.expires_at <= excluded.expires_at - $3::bigint * interval '1 microsecond')`

// relockSQL hands a row still owned by the old owner ($2), its lease not
// lapsed and not wanted by another owner, to the new one ($3) with a new
// token, as acquireSQL would after a release. $1 key, $4 TTL in µs, $5
// metadata.
const relockSQL = `UPDATE %[1]s AS t SET owner = $3::bytea,
	token = greatest(t.token + 1, (extract(epoch FROM n.now) * 1000000)::bigint),
	expires_at = n.now + $4::bigint * interval '1 microsecond',
	metadata = $5::text, wanted = false
FROM (SELECT clock_timestamp() AS now) AS n
WHERE t.key = $1::bytea AND t.owner = $2::bytea AND t.expires_at > n.now AND NOT t.wanted
RETURNING t.token`

// extendSQL renews the leases still owned and not lapsed. The rows are
// locked in key order first, as releaseSQL does: an UPDATE joined to the
// arrays locks them in whatever order its plan visits them (the arrays'
// order, once the table is large enough for index lookups), and two
// batches sharing leases in different orders (an Extend and a Release of
// the same holds, which a Manager sends together when it unlocks during a
// refresh) would deadlock until deadlock_timeout (1s) aborted one.
// $1 keys, $2 owners, $3 TTL in µs.
const extendSQL = `WITH l AS (
	SELECT * FROM unnest($1::bytea[], $2::bytea[]) AS l(key, owner)
), o AS (
	SELECT t.key, t.owner
	FROM %[1]s AS t JOIN l ON t.key = l.key AND t.owner = l.owner
	WHERE t.expires_at > clock_timestamp()
	ORDER BY t.key
	FOR UPDATE OF t
)
UPDATE %[1]s AS t SET expires_at = clock_timestamp() + $3::bigint * interval '1 microsecond'
FROM o WHERE t.key = o.key AND t.owner = o.owner AND t.expires_at > clock_timestamp()
RETURNING t.key, t.owner`

// releaseSQL frees the rows still owned (the token stays), reports whether
// each was wanted while its lease lasted, and notifies the channel with the
// key's digest; notifications go out when the statement commits. The rows
// are locked in key order first, so that batches do not deadlock.
// $1 keys, $2 owners, $3 channel.
const releaseSQL = `WITH l AS (
	SELECT * FROM unnest($1::bytea[], $2::bytea[]) AS l(key, owner)
), o AS (
	SELECT t.key, t.owner, (t.wanted AND t.expires_at > clock_timestamp()) AS contended
	FROM %[1]s AS t JOIN l ON t.key = l.key AND t.owner = l.owner
	ORDER BY t.key
	FOR UPDATE OF t
), u AS (
	UPDATE %[1]s AS t SET owner = NULL, metadata = '', wanted = false
	FROM o WHERE t.key = o.key AND t.owner = o.owner
	RETURNING t.key, o.owner, o.contended
)
SELECT u.key, u.owner, u.contended, pg_notify($3::text, encode(sha256(u.key), 'hex')) FROM u`

// keyDigest is the notification payload of key: the hex SHA-256 of its
// bytes (a NOTIFY payload is limited to 8000 bytes; keys are not).
func keyDigest(key string) string {
	d := sha256.Sum256([]byte(key))
	return hex.EncodeToString(d[:])
}

// micros returns d in whole microseconds, at least 1.
func micros(d time.Duration) int64 { return max(d.Microseconds(), 1) }

// validText makes metadata storable as text: PostgreSQL refuses NUL and
// invalid UTF-8, which become U+FFFD.
func validText(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

func (b *Backend) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// Acquire implements ctxlock.Backend in one statement (one round trip).
func (b *Backend) Acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	if err := b.checkRequest(req); err != nil {
		return ctxlock.Lease{}, err
	}
	ctx, cancel := attemptContext(ctx, req.Timeout)
	defer cancel()
	return b.acquire(ctx, req)
}

func (b *Backend) checkRequest(req ctxlock.AcquireRequest) error {
	if b.isClosed() {
		return ErrClosed
	}
	if req.Key == "" || req.Owner == "" || req.TTL <= 0 {
		return fmt.Errorf("postgres: invalid acquire request (key %q, owner %q, ttl %v)", req.Key, req.Owner, req.TTL)
	}
	return nil
}

// attemptContext bounds an attempt by timeout (when > 0) and ctx's deadline,
// if sooner. The statement runs to its answer or that deadline even when
// ctx is cancelled meanwhile, as go-redis calls do. A cancellation would
// drop the connection while the server may still run the statement, and
// take the key after the Manager's release of this owner ran on another
// connection; waiting for the answer (at most the attempt's timeout) makes
// the outcome known instead.
func attemptContext(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout <= 0 {
		return ctx, func() {}
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	return context.WithDeadline(context.WithoutCancel(ctx), deadline)
}

func (b *Backend) acquire(ctx context.Context, req ctxlock.AcquireRequest) (ctxlock.Lease, error) {
	var (
		ok        bool
		token     int64
		remaining int64
	)
	err := b.pool.QueryRow(ctx, b.acquireSQL, []byte(req.Key), []byte(req.Owner), micros(req.TTL), validText(req.Metadata)).
		Scan(&ok, &token, &remaining)
	if err != nil {
		return ctxlock.Lease{}, classify("acquire", err)
	}
	if !ok {
		// A lease that lapsed between the check and the answer: a short
		// hint, not 0 (unknown).
		return ctxlock.Lease{}, &ctxlock.HeldError{Remaining: max(time.Duration(remaining)*time.Microsecond, time.Millisecond)}
	}
	return lease(req, token)
}

func lease(req ctxlock.AcquireRequest, token int64) (ctxlock.Lease, error) {
	if token <= 0 {
		return ctxlock.Lease{}, fmt.Errorf("postgres: acquire %q: the table holds a non-positive token %d", req.Key, token)
	}
	return ctxlock.Lease{Key: req.Key, Owner: req.Owner, Token: uint64(token)}, nil
}

// Relock implements ctxlock.Relocker. When old still holds its key, its
// lease has not lapsed, and no other owner was refused the key meanwhile
// (the row's wanted mark), one statement hands the row to req.Owner with a
// new token: the loop "Unlock, then Lock the same key again" costs one round
// trip instead of two. Otherwise it releases old as ReleaseContended does
// (notifying the key's watchers) and, unless the key was wanted, acquires as
// Acquire does: two round trips, as without Relock. It never queues
// (queued is always false: the Backend has no waiter queue).
func (b *Backend) Relock(ctx context.Context, old ctxlock.Lease, req ctxlock.AcquireRequest) (l ctxlock.Lease, wanted, queued bool, err error) {
	if err := b.checkRequest(req); err != nil {
		return ctxlock.Lease{}, false, false, err
	}
	if old.Key != req.Key {
		return ctxlock.Lease{}, false, false, fmt.Errorf("postgres: relock: %w: old lease of %q, request for %q", ctxlock.ErrInvalidOption, old.Key, req.Key)
	}
	ctx, cancel := attemptContext(ctx, req.Timeout)
	defer cancel()
	var token int64
	err = b.pool.QueryRow(ctx, b.relockSQL, []byte(req.Key), []byte(old.Owner), []byte(req.Owner), micros(req.TTL), validText(req.Metadata)).
		Scan(&token)
	switch {
	case err == nil:
		l, err = lease(req, token)
		return l, false, false, err
	case !errors.Is(err, pgx.ErrNoRows):
		return ctxlock.Lease{}, false, false, classify("relock", err)
	}
	errs, contended := b.ReleaseContended(ctx, []ctxlock.Lease{old})
	if errs[0] != nil {
		return ctxlock.Lease{}, false, false, errs[0]
	}
	if len(contended) > 0 && contended[0] {
		return ctxlock.Lease{}, true, false, nil
	}
	l, err = b.acquire(ctx, req)
	return l, false, false, err
}

// leaseArgs returns the keys and owners of leases as bytea arrays.
func leaseArgs(leases []ctxlock.Lease) (keys, owners [][]byte) {
	keys, owners = make([][]byte, len(leases)), make([][]byte, len(leases))
	for i, l := range leases {
		keys[i], owners[i] = []byte(l.Key), []byte(l.Owner)
	}
	return keys, owners
}

type leaseID struct{ key, owner string }

// Extend implements ctxlock.Backend: one statement for the whole batch.
func (b *Backend) Extend(ctx context.Context, leases []ctxlock.Lease, ttl time.Duration) []error {
	if b.isClosed() {
		return fill(len(leases), ErrClosed)
	}
	if ttl <= 0 {
		return fill(len(leases), fmt.Errorf("postgres: extend: %w: TTL %v", ctxlock.ErrInvalidOption, ttl))
	}
	errs := make([]error, len(leases))
	if len(leases) == 0 {
		return errs
	}
	keys, owners := leaseArgs(leases)
	rows, err := b.pool.Query(ctx, b.extendSQL, keys, owners, micros(ttl))
	extended, err := collect(rows, err, func(r pgx.Rows) (leaseID, error) {
		var k, o []byte
		err := r.Scan(&k, &o)
		return leaseID{string(k), string(o)}, err
	})
	if err != nil {
		return fill(len(leases), classify("extend", err))
	}
	got := make(map[leaseID]bool, len(extended))
	for _, id := range extended {
		got[id] = true
	}
	for i, l := range leases {
		if !got[leaseID{l.Key, l.Owner}] {
			errs[i] = fmt.Errorf("postgres: extend %q: %w (lapsed, released or taken over)", l.Key, ctxlock.ErrLost)
		}
	}
	return errs
}

// collect reads every row of a query with scan.
func collect[T any](rows pgx.Rows, err error, scan func(pgx.Rows) (T, error)) ([]T, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// Release implements ctxlock.Backend: one statement for the whole batch.
func (b *Backend) Release(ctx context.Context, leases []ctxlock.Lease) []error {
	errs, _ := b.ReleaseContended(ctx, leases)
	return errs
}

// ReleaseContended implements ctxlock.ContentionReporter: it releases as
// Release does and reports which leases another owner's Acquire found held
// while they lasted.
func (b *Backend) ReleaseContended(ctx context.Context, leases []ctxlock.Lease) (errs []error, contended []bool) {
	if b.isClosed() {
		return fill(len(leases), ErrClosed), nil
	}
	errs = make([]error, len(leases))
	if len(leases) == 0 {
		return errs, nil
	}
	keys, owners := leaseArgs(leases)
	type released struct {
		id        leaseID
		contended bool
	}
	rows, err := b.pool.Query(ctx, b.releaseSQL, keys, owners, b.channel)
	freed, err := collect(rows, err, func(r pgx.Rows) (released, error) {
		var k, o []byte
		var c bool
		err := r.Scan(&k, &o, &c, nil)
		return released{leaseID{string(k), string(o)}, c}, err
	})
	if err != nil {
		return fill(len(leases), classify("release", err)), nil
	}
	for _, f := range freed {
		if !f.contended {
			continue
		}
		for i, l := range leases {
			if (leaseID{l.Key, l.Owner}) == f.id {
				if contended == nil {
					contended = make([]bool, len(leases))
				}
				contended[i] = true
			}
		}
	}
	return errs, contended
}

func fill(n int, err error) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
}

// Health implements ctxlock.Backend: it pings the server through the pool,
// and reports the listener's state once a Watch has started it.
func (b *Backend) Health(ctx context.Context) ([]string, error) {
	b.mu.Lock()
	closed, listening, up, lerr := b.closed, b.listening, b.listenUp, b.listenErr
	b.mu.Unlock()
	if closed {
		return []string{"postgres: closed"}, ErrClosed
	}
	var conds []string
	if listening && !up {
		c := "postgres: release notifications down (reconnecting; waiters poll meanwhile)"
		if lerr != nil {
			c += ": " + lerr.Error()
		}
		conds = append(conds, c)
	}
	if err := b.pool.Ping(ctx); err != nil {
		err = classify("ping", err)
		return append(conds, "postgres: server unreachable: "+err.Error()), err
	}
	return conds, nil
}

// Close stops the listener and waits for its goroutine. It does not close
// the pool. Later Acquire, Extend, Release and Health calls fail with
// ErrClosed; Watch returns a nil channel.
func (b *Backend) Close() error {
	b.mu.Lock()
	b.closed = true
	done := b.listenDone
	b.mu.Unlock()
	b.cancel()
	if done != nil {
		<-done
	}
	return nil
}

// transientCodes are SQLSTATEs (and classes, two characters) worth retrying.
var transientCodes = map[string]bool{
	"08":    true, // connection exception
	"53":    true, // insufficient resources (too many connections, disk full, out of memory)
	"58":    true, // system error (I/O)
	"40001": true, // serialization failure
	"40003": true, // statement completion unknown
	"40P01": true, // deadlock detected
	"55P03": true, // lock not available
	"57014": true, // query canceled (statement_timeout, cancel request)
	"57P01": true, // admin shutdown
	"57P02": true, // crash shutdown
	"57P03": true, // cannot connect now (starting up, recovering)
	"57P05": true, // idle session timeout
	"25006": true, // read-only transaction (a standby, during a failover)
}

// classify wraps a pgx error: faults of the connection or the server's
// state match ctxlock.ErrUnavailable (the Manager retries them; for an
// Acquire, the outcome is unknown); other server errors (a missing table,
// missing privileges) are permanent.
func classify(op string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		if transientCodes[pgErr.Code] || (len(pgErr.Code) == 5 && transientCodes[pgErr.Code[:2]]) {
			return ctxlock.Unavailable(fmt.Errorf("postgres: %s: %w", op, err))
		}
		switch pgErr.Code {
		case "42P01": // undefined_table
			return fmt.Errorf("postgres: %s: the lease table does not exist (New creates it unless WithoutCreateTable is given; see CreateTableSQL): %w", op, err)
		case "42501": // insufficient_privilege
			return fmt.Errorf("postgres: %s: the role lacks privileges on the lease table: %w", op, err)
		}
		return fmt.Errorf("postgres: %s: %w", op, err)
	}
	if errors.Is(err, puddle.ErrClosedPool) {
		return fmt.Errorf("postgres: %s: the pool was closed before the Backend (the caller owns the pool): %w", op, err)
	}
	// Everything else did not come from the server's SQL: the network, a
	// timeout, a closed connection, a connect failure.
	return ctxlock.Unavailable(fmt.Errorf("postgres: %s: %w", op, err))
}
