// Package postgres is a ctxlock.Backend that stores leases in a PostgreSQL
// table through a pgx v5 connection pool ([pgxpool.Pool]).
//
// # Quick start
//
//	pool, err := pgxpool.New(ctx, "postgres://app@db:5432/app")
//	if err != nil { ... }
//	defer pool.Close() // after the Backend: the caller owns the pool
//
//	backend, err := postgres.New(ctx, pool) // creates the table if it does not exist
//	if err != nil { ... }
//	defer backend.Close() // after the Managers; does not close the pool
//
//	m := ctxlock.NewManager(backend, ctxlock.WithNamespace("myapp:"))
//	defer m.Close(context.Background())
//
//	lock := m.NewLock("nightly-report")
//	expired, err := lock.Lock(ctx)
//
// Every process that locks the same keys must use the same database, table
// (WithTable) and channel (WithChannel).
//
// # The table
//
// New runs CREATE TABLE IF NOT EXISTS unless WithoutCreateTable is given;
// CreateTableSQL returns the same DDL for a DBA to apply:
//
//	CREATE TABLE IF NOT EXISTS ctxlock_leases (
//		key        bytea       PRIMARY KEY,
//		owner      bytea,
//		token      bigint      NOT NULL,
//		expires_at timestamptz NOT NULL,
//		wanted     boolean     NOT NULL DEFAULT false,
//		metadata   text        NOT NULL DEFAULT ''
//	)
//
// One row per key ever locked:
//
//   - key: the full key (the Manager's namespace included) as bytes. Keys
//     are opaque: bytea takes NUL and invalid UTF-8, which text refuses.
//     Operators can read it with convert_from(key, 'UTF8').
//   - owner: the id of the current hold, NULL when the key is free. A lease
//     whose expires_at has passed is free too, whatever its owner says:
//     the next Acquire takes it.
//   - token: the fencing token of the last hold. It never decreases and
//     stays when the key is released.
//   - expires_at: when the lease ends (or ended), on the server's clock.
//   - wanted: an Acquire by another owner was refused while this lease
//     lasted; its release reports the contention (ctxlock.ContentionReporter),
//     so that a process re-locking at once yields to waiters elsewhere.
//   - metadata: the holder's ctxlock.WithMetadata text, for operators (NUL
//     and invalid UTF-8, which text cannot hold, become U+FFFD).
//
// "Who holds what" for an operator:
//
//	SELECT convert_from(key, 'UTF8'), metadata, token, expires_at - now() AS remaining
//	FROM ctxlock_leases WHERE owner IS NOT NULL AND expires_at > now();
//
// # Fencing tokens and pruning
//
// A hold's token is max(the key's last token + 1, the server's clock in
// microseconds since 1970), so tokens are large (about 1.8·10¹⁵), strictly
// increasing per key, and durable: they are committed with the lease and
// survive restarts of the server and of every process.
//
// Rows stay after release, so that tokens never go back (as the fence
// counters of the Redis backend do). A service that locks many distinct
// keys ("order:123") grows the table by one small row per key; an operator
// may prune free rows, for instance daily:
//
//	DELETE FROM ctxlock_leases WHERE expires_at < now() - interval '1 hour';
//
// (a row whose lease ended an hour ago is free, whatever its owner says; a
// concurrent Acquire that renews the row wins, as PostgreSQL re-checks the
// condition on the row it updated). A pruned key's next token comes from
// the clock, which is above every token the key had as long as the
// server's clock has not stepped back by more than the time since the
// key's last lock (an hour, with the statement above). The price of
// pruning is that reliance on the clock; the price of not pruning, a row
// per key.
//
// # Time
//
// Leases expire on the database server's clock (clock_timestamp()); TTLs
// are sent in microseconds. Client clocks do not matter: the Manager
// measures its own validity window with its monotonic clock, from before
// the request was sent, so it ends before the lease does on the server.
//
// # Round trips
//
// Acquire is one statement (INSERT … ON CONFLICT DO UPDATE): it takes a
// free or lapsed key, renews a lease the caller already owns (a retried
// attempt whose first answer was lost), or refuses, marking the row wanted
// and returning the holder's remaining TTL (ctxlock.HeldError); a refusal
// therefore writes the row too (a HOT update: the key does not change).
// Relock (ctxlock.Relocker: a Lock of a key whose release by the same
// Manager is still pending, as in a loop of Unlock and Lock) is one UPDATE
// that hands the row to the new owner with a new token when the old lease
// still holds it and nobody was refused the key meanwhile; otherwise a
// release (which notifies) and, unless the key was wanted, an acquire.
// Extend and Release each take a whole batch in one statement (unnest of key and owner
// arrays). A lease that Extend does not find owned and live is lost
// (ctxlock.ErrLost); one that Release does not find owned is gone either
// way (nil). Acquire bounds its statement by AcquireRequest.Timeout (and
// ctx's deadline, if sooner), and waits for the answer within that bound
// even when ctx is cancelled, as go-redis calls do: pgx cancels a statement
// by dropping its connection, while the server may still run it and take
// the key after the Manager's release of the attempt. A statement cut off
// by its deadline has an unknown outcome (ctxlock.ErrUnavailable: the
// Manager then releases the owner, which is harmless if nothing was taken,
// and repeats that release until the lease would have lapsed). The
// attempt's bound (ctxlock.WithAcquireTimeout, 100ms by default) includes
// waiting for a pool connection, and dialing one when the pool has none
// idle: give the pool MinConns, or the locks a longer acquire timeout,
// where connecting is slow (TLS, a remote server).
//
// # Notifications
//
// A release notifies (pg_notify, sent when the statement commits) the
// channel with the hex SHA-256 of each freed key. The first Watch starts
// one listener per Backend: a dedicated connection made with the pool's
// connection config and its BeforeConnect and AfterConnect hooks (not
// taken from the pool), application_name
// ListenerApplicationName, and one goroutine that wakes the watchers of the
// notified key. It pings the connection after 15s without a notification,
// reconnects with backoff (50ms up to 2s) when the connection fails, and
// after every LISTEN wakes all watchers, since a release may have gone
// unheard. The listener stays until Close, also when no watcher is left.
// Lapses are not notified: Acquire reports the holder's remaining TTL and
// the Manager wakes its waiters then. Health reports a listener that is
// reconnecting; waiters then fall back to their backoff.
//
// LISTEN needs a session: behind PgBouncer in transaction pooling mode the
// pool's connection config must point at the server itself (or a session
// pool), or notifications will not arrive (waiters then poll).
//
// # Errors
//
// Faults of the connection and of the server's state are transient and
// match ctxlock.ErrUnavailable, so that the Manager retries them: network
// errors and timeouts, connect failures, and the SQLSTATEs of class 08
// (connection), 53 (insufficient resources), 58 (system error), 40001
// (serialization failure), 40003 (statement completion unknown), 40P01
// (deadlock), 55P03 (lock not available),
// 57014 (query canceled), 57P01–57P03 and 57P05 (shutdown, recovery, idle
// timeout) and 25006 (read-only transaction, as on a standby during a
// failover). Other server errors are permanent and returned by Lock and
// TryLock: a missing table (with WithoutCreateTable: "the lease table does
// not exist"), missing privileges, and the like. So is a pool closed before
// the Backend.
//
// # Not supported
//
// The Backend implements ctxlock.ContentionReporter, ctxlock.Relocker and
// ctxlock.BackendNamer ("postgres"), not ctxlock.WaiterQueue (waiters race
// for a released key; the Manager's local queue keeps one attempt per
// process, and a process that re-locks yields once another was refused)
// or ctxlock.RoundTripNotifier. Leases on an asynchronous replica promoted
// by a failover may lack the last commits: a lease or token written just
// before the failover can be lost, as with any asynchronously replicated
// store; use synchronous replication if that matters.
package postgres
