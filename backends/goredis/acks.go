package goredis

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
)

// ErrNotReplicated is the fault of a lease written with WithReplicaAcks that
// fewer replicas than asked acknowledged in time. It is transient (it
// matches ctxlock.ErrUnavailable): an acquire that took the key gives it
// back and the Manager tries again (a key granted to the caller's waiter
// stays granted to it, for its next attempt, or until it leaves the
// queue); a refresh leaves the hold's validity where the last acknowledged
// refresh put it.
var ErrNotReplicated = errors.New("goredis: not acknowledged by enough replicas")

// DefaultReplicaAckTimeout is how long WithReplicaAcks waits for the
// replicas when given no timeout: half of the default acquire timeout
// (ctxlock.DefaultAcquireTimeout, 100ms).
// Redis reports a shortfall on its timer, up to about 100ms after the
// timeout; to see ErrNotReplicated rather than an attempt that timed out,
// give the locks a WithAcquireTimeout of at least timeout + 100ms (as
// Example_sentinel does, with 250ms).
const DefaultReplicaAckTimeout = 50 * time.Millisecond

// WithReplicaAcks makes every write that gives or extends a lease (Acquire,
// Relock, Extend) wait until at least n replicas of the server have
// acknowledged it, for at most timeout (DefaultReplicaAckTimeout when ≤ 0):
// the pipeline carrying the writes ends with a WAIT n timeout. A lease that
// too few replicas acknowledged is not reported as taken or extended (see
// ErrNotReplicated). n ≤ 0 turns the option off.
//
// It is for a master with replicas, standalone or watched by Sentinel.
// Redis replicates asynchronously: without it, a master that fails right
// after granting a lease may be replaced by a replica that never heard of
// the lease, and another owner can take the key while the first holder
// still holds it (see the package documentation). With it, that needs all
// n acknowledging replicas to be passed over by the failover as well;
// Sentinel promotes the replica with the most replicated data, so with n
// of r replicas acknowledged it takes r−n+1 more failures to lose a lease.
// It is what Redisson's checkLockSyncedSlaves does; WAIT does not make
// Redis strongly consistent, and a replica that restarts without
// persistence forgets what it acknowledged.
//
// Redis times WAIT out on its hz timer (every 100ms at the default hz
// 10), so a shortfall takes up to about timeout + 100ms to be reported: with
// a shorter ctxlock.WithAcquireTimeout an attempt then times out instead,
// which is as safe (the Manager releases its lease) but reports the timeout
// rather than ErrNotReplicated. Replicas in good health answer within a
// replication round trip.
//
// The price is a replica round trip on every acquire and refresh batch,
// and that a lock cannot be taken, nor a hold refreshed, while fewer than
// n replicas answer: choose n below the number of replicas to ride out the
// loss of one. Releases do not wait: a release lost in a failover leaves
// the key held until its TTL, but never gives it to two owners.
//
// It needs a *redis.Client (standalone, or redis.NewFailoverClient): a
// Cluster or Ring client splits pipelines across servers, and WAIT counts
// the writes of one connection. With any other client Acquire, Relock and
// Extend fail with ctxlock.ErrInvalidOption, and Health reports the mistake
// (so a start-up check with Manager.Health finds it before any Lock).
func WithReplicaAcks(n int, timeout time.Duration) Option {
	return func(o *options) {
		if timeout <= 0 {
			timeout = DefaultReplicaAckTimeout
		}
		// WAIT takes whole milliseconds, and 0 would wait for ever.
		timeout = max(timeout.Round(time.Millisecond), time.Millisecond)
		o.acks = replicaAcks{n: max(n, 0), timeout: timeout}
	}
}

// replicaAcks is WithReplicaAcks's setting; n == 0 waits for no replica.
type replicaAcks struct {
	n       int
	timeout time.Duration
}

// wait queues WAIT at the end of pipe, whose writes it then covers (WAIT
// counts the replicas that have all of its connection's writes), or
// returns nil when no acknowledgement is wanted.
func (a replicaAcks) wait(ctx context.Context, pipe redis.Pipeliner) *redis.IntCmd {
	if a.n == 0 {
		return nil
	}
	cmd := redis.NewIntCmd(ctx, "wait", a.n, a.timeout.Milliseconds())
	_ = pipe.Process(ctx, cmd)
	return cmd
}

// check returns nil when cmd (from wait, run) counted enough replicas,
// and an error wrapping ErrNotReplicated otherwise.
func (a replicaAcks) check(cmd *redis.IntCmd) error {
	if cmd == nil {
		return nil
	}
	got, err := cmd.Result()
	switch {
	case err != nil:
		return fmt.Errorf("%w: WAIT failed: %w", ErrNotReplicated, err)
	case got < int64(a.n):
		return fmt.Errorf("%w: %d of %d within %v", ErrNotReplicated, got, a.n, a.timeout)
	}
	return nil
}

// acksUnsupported returns the error of a write that needs acknowledgements the
// client cannot give: any but a *redis.Client (standalone, or a Sentinel
// failover client), whose pipelines go to one server on one connection.
func (b *Backend) acksUnsupported() error {
	if b.opts.acks.n == 0 {
		return nil
	}
	if _, ok := b.client.(*redis.Client); !ok {
		return fmt.Errorf("goredis: %w: WithReplicaAcks needs a *redis.Client (standalone or Sentinel), not a %T", ctxlock.ErrInvalidOption, b.client)
	}
	return nil
}
