package main

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bsm/redislock"
	"github.com/go-redsync/redsync/v4"
	rsredis "github.com/go-redsync/redsync/v4/redis"
	rsgoredis "github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
	"github.com/redis/rueidis/rueidislock"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/goredis"
)

// Mutex is one lock key as seen by one client. Lock blocks until acquired or
// ctx is done; Unlock releases it.
type Mutex interface {
	Lock(ctx context.Context) error
	Unlock(ctx context.Context) error
}

// Locker is one implementation's client (one process, in effect).
type Locker interface {
	NewMutex(key string) Mutex
	// Hold acquires key and keeps it alive (auto-refresh) until release is
	// called. lost reports whether the hold ended on its own meanwhile.
	Hold(ctx context.Context, key string) (release func(), lost func() bool, err error)
	Close()
}

// Impl makes Lockers. ttl 0 means the implementation's default.
type Impl struct {
	Name string
	// Base rows run in every scenario; tuned rows only where tuning matters
	// (contention).
	Base bool
	New  func(addrs []string, cnt *cmdCounter, ttl time.Duration) (Locker, error)
}

// rtHook counts round trips of a go-redis client: one per command processed
// alone, one per pipeline.
type rtHook struct{ c *cmdCounter }

func (h rtHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h rtHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.c.rts.Add(1)
		return next(ctx, cmd)
	}
}
func (h rtHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.c.rts.Add(1)
		return next(ctx, cmds)
	}
}

func newGoRedis(addr string, cnt *cmdCounter) (*redis.Client, error) {
	return newGoRedisOpts(&redis.Options{Addr: addr}, cnt)
}

func newGoRedisOpts(opt *redis.Options, cnt *cmdCounter) (*redis.Client, error) {
	opt.Dialer = cnt.dial
	c := redis.NewClient(opt)
	if cnt != nil {
		c.AddHook(rtHook{cnt})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func orDefault(ttl, def time.Duration) time.Duration {
	if ttl > 0 {
		return ttl
	}
	return def
}

// ---- ctxlock over backends/goredis ----

func ctxlockImpl() Impl {
	return Impl{Name: "ctxlock", Base: true, New: func(addrs []string, cnt *cmdCounter, ttl time.Duration) (Locker, error) {
		c, err := newGoRedis(addrs[0], cnt)
		if err != nil {
			return nil, err
		}
		var bopts []goredis.Option
		if *clockTokens {
			bopts = append(bopts, goredis.WithClockTokens(time.Hour))
		}
		b := goredis.New(c, bopts...)
		var opts []ctxlock.LockOption
		if ttl > 0 {
			opts = append(opts, ctxlock.WithTTL(ttl))
		}
		return &ctxLocker{m: ctxlock.NewManager(b), close: func() { b.Close(); c.Close() }, opts: opts}, nil
	}}
}

type ctxLocker struct {
	m     *ctxlock.Manager
	close func()
	opts  []ctxlock.LockOption
}

type ctxMutex struct{ l ctxlock.Lock }

func (x *ctxLocker) NewMutex(key string) Mutex { return ctxMutex{x.m.NewLock(key, x.opts...)} }
func (m ctxMutex) Lock(ctx context.Context) error {
	_, err := m.l.Lock(ctx)
	return err
}
func (m ctxMutex) Unlock(context.Context) error { return m.l.Unlock() }

func (x *ctxLocker) Hold(ctx context.Context, key string) (func(), func() bool, error) {
	l := x.m.NewLock(key, x.opts...)
	expired, err := l.Lock(ctx)
	if err != nil {
		return nil, nil, err
	}
	lost := func() bool {
		select {
		case <-expired:
			return true
		default:
			return false
		}
	}
	return func() { _ = l.Unlock() }, lost, nil
}

func (x *ctxLocker) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = x.m.Close(ctx)
	x.close()
}

// peerRefresh is the documented way to keep a peer's lock alive: one
// goroutine per lock calling its extend method every interval.
func peerRefresh(interval time.Duration, extend func(context.Context) error) (stop func(), lost func() bool) {
	var failed atomic.Bool
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				ctx, cancel := context.WithTimeout(context.Background(), interval)
				err := extend(ctx)
				cancel()
				if err != nil {
					failed.Store(true)
				}
			}
		}
	}()
	return func() { close(done); wg.Wait() }, failed.Load
}

// ---- go-redsync/redsync v4 ----

func redsyncImpl(name string, base bool, opts ...redsync.Option) Impl {
	return Impl{Name: name, Base: base, New: func(addrs []string, cnt *cmdCounter, ttl time.Duration) (Locker, error) {
		var pools []rsredisPool
		var clients []*redis.Client
		for _, a := range addrs {
			c, err := newGoRedis(a, cnt)
			if err != nil {
				for _, c := range clients {
					c.Close()
				}
				return nil, err
			}
			clients = append(clients, c)
			pools = append(pools, rsgoredis.NewPool(c))
		}
		o := append([]redsync.Option(nil), opts...)
		if ttl > 0 {
			o = append(o, redsync.WithExpiry(ttl))
		}
		return &redsyncLocker{rs: redsync.New(pools...), opts: o, ttl: orDefault(ttl, 8*time.Second), clients: clients}, nil
	}}
}

type redsyncLocker struct {
	rs      *redsync.Redsync
	opts    []redsync.Option
	ttl     time.Duration
	clients []*redis.Client
}

type redsyncMutex struct{ m *redsync.Mutex }

func (x *redsyncLocker) NewMutex(key string) Mutex {
	return redsyncMutex{x.rs.NewMutex(key, x.opts...)}
}

// Lock retries LockContext after it gives up (ErrFailed / ErrTaken once its
// tries are exhausted), as its docs say, until ctx is done.
func (m redsyncMutex) Lock(ctx context.Context) error {
	for {
		err := m.m.LockContext(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var taken *redsync.ErrTaken
		var taken2 redsync.ErrTaken
		if !errors.Is(err, redsync.ErrFailed) && !errors.As(err, &taken) && !errors.As(err, &taken2) {
			return err
		}
	}
}
func (m redsyncMutex) Unlock(ctx context.Context) error {
	ok, err := m.m.UnlockContext(ctx)
	if err == nil && !ok {
		err = errors.New("redsync: unlock failed")
	}
	return err
}

func (x *redsyncLocker) Hold(ctx context.Context, key string) (func(), func() bool, error) {
	m := x.rs.NewMutex(key, x.opts...)
	if err := (redsyncMutex{m}).Lock(ctx); err != nil {
		return nil, nil, err
	}
	stop, lost := peerRefresh(x.ttl/3, func(ctx context.Context) error {
		ok, err := m.ExtendContext(ctx)
		if err == nil && !ok {
			err = redsync.ErrExtendFailed
		}
		return err
	})
	return func() {
		stop()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = m.UnlockContext(ctx)
	}, lost, nil
}

func (x *redsyncLocker) Close() {
	for _, c := range x.clients {
		c.Close()
	}
}

// ---- bsm/redislock ----

// redislockImpl: retry nil means the library default (NoRetry) with the
// caller retrying at once on ErrNotObtained, as its README benchmark does.
func redislockImpl(name string, base bool, retry func() redislock.RetryStrategy) Impl {
	return Impl{Name: name, Base: base, New: func(addrs []string, cnt *cmdCounter, ttl time.Duration) (Locker, error) {
		c, err := newGoRedis(addrs[0], cnt)
		if err != nil {
			return nil, err
		}
		return &redislockLocker{c: c, rl: redislock.New(c), retry: retry, ttl: orDefault(ttl, 10*time.Second)}, nil
	}}
}

type redislockLocker struct {
	c     *redis.Client
	rl    *redislock.Client
	retry func() redislock.RetryStrategy
	ttl   time.Duration
}

type redislockMutex struct {
	x    *redislockLocker
	key  string
	held *redislock.Lock
}

func (x *redislockLocker) NewMutex(key string) Mutex { return &redislockMutex{x: x, key: key} }

func (m *redislockMutex) Lock(ctx context.Context) error {
	for {
		var opt *redislock.Options
		if m.x.retry != nil {
			opt = &redislock.Options{RetryStrategy: m.x.retry()}
		}
		l, err := m.x.rl.Obtain(ctx, m.key, m.x.ttl, opt)
		if err == nil {
			m.held = l
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !errors.Is(err, redislock.ErrNotObtained) && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
	}
}

func (m *redislockMutex) Unlock(ctx context.Context) error {
	l := m.held
	m.held = nil
	if l == nil {
		return errors.New("redislock: not held")
	}
	return l.Release(ctx)
}

func (x *redislockLocker) Hold(ctx context.Context, key string) (func(), func() bool, error) {
	m := &redislockMutex{x: x, key: key}
	if err := m.Lock(ctx); err != nil {
		return nil, nil, err
	}
	l := m.held
	stop, lost := peerRefresh(x.ttl/3, func(ctx context.Context) error { return l.Refresh(ctx, x.ttl, nil) })
	return func() {
		stop()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = l.Release(ctx)
	}, lost, nil
}

func (x *redislockLocker) Close() { x.c.Close() }

// ---- redis/rueidis rueidislock ----

// rueidislockImpl uses the README's single-instance settings (KeyMajority 1,
// NoLoopTracking). poll disables client-side caching: waiters then retry
// every TryNextAfter instead of on invalidation.
func rueidislockImpl(name string, base bool, poll time.Duration) Impl {
	return Impl{Name: name, Base: base, New: func(addrs []string, cnt *cmdCounter, ttl time.Duration) (Locker, error) {
		o := rueidislock.LockerOption{
			ClientOption:   rueidis.ClientOption{InitAddress: addrs[:1], DialCtxFn: cnt.dialRueidis},
			KeyMajority:    1,
			NoLoopTracking: true,
			KeyValidity:    ttl,
		}
		if poll > 0 {
			o.ClientOption.DisableCache = true
			o.TryNextAfter = poll
		}
		l, err := rueidislock.NewLocker(o)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := l.Client().Do(ctx, l.Client().B().Ping().Build()).Error(); err != nil {
			l.Close()
			return nil, err
		}
		return &rueidisLocker{l: l}, nil
	}}
}

type rueidisLocker struct{ l rueidislock.Locker }

type rueidisMutex struct {
	l      rueidislock.Locker
	key    string
	cancel context.CancelFunc
}

func (x *rueidisLocker) NewMutex(key string) Mutex { return &rueidisMutex{l: x.l, key: key} }

func (m *rueidisMutex) Lock(ctx context.Context) error {
	_, cancel, err := m.l.WithContext(ctx, m.key)
	if err != nil {
		return err
	}
	m.cancel = cancel
	return nil
}

func (m *rueidisMutex) Unlock(context.Context) error {
	if m.cancel == nil {
		return errors.New("rueidislock: not held")
	}
	m.cancel() // blocks until the key is deleted
	m.cancel = nil
	return nil
}

func (x *rueidisLocker) Hold(ctx context.Context, key string) (func(), func() bool, error) {
	// The lock's context is derived from the one given to WithContext, so
	// hold on a context of its own that ctx can cancel only while acquiring.
	parent, cancelParent := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancelParent)
	lctx, cancel, err := x.l.WithContext(parent, key)
	if !stop() { // ctx ended during the acquire
		if err == nil {
			cancel()
		}
		cancelParent()
		return nil, nil, ctx.Err()
	}
	if err != nil {
		cancelParent()
		return nil, nil, err
	}
	return func() { cancel(); cancelParent() }, func() bool { return lctx.Err() != nil }, nil
}

func (x *rueidisLocker) Close() { x.l.Close() }

type rsredisPool = rsredis.Pool
