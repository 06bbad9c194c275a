package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Listener timing.
const (
	// listenIdle is how long the listener waits for a notification before
	// it pings its connection, so that a server that vanished without
	// closing the connection (frozen, partitioned) is noticed.
	listenIdle = 15 * time.Second
	// listenPing bounds that ping, and the connect and LISTEN of a
	// reconnect.
	listenPing = 5 * time.Second
	// Reconnect backoff.
	backoffMin = 50 * time.Millisecond
	backoffMax = 2 * time.Second
)

// Watch implements ctxlock.Backend. The channel receives (coalesced) after
// a release of key by any Backend on the same table and channel, and after
// the listening connection was (re)established, since a release may have
// been missed meanwhile. Lapses are not notified: Acquire reports the
// holder's remaining TTL instead, and the Manager wakes its waiters then.
//
// The first Watch starts the Backend's listener: one dedicated connection
// (not from the pool, made with the pool's connection config and its
// BeforeConnect and AfterConnect hooks) that LISTENs
// on the channel, and one goroutine. It stays until Close, also when the
// last watcher stops. After Close, Watch returns a nil channel and a no-op
// stop.
func (b *Backend) Watch(key string) (<-chan struct{}, func()) {
	w := &watcher{ch: make(chan struct{}, 1)}
	d := keyDigest(key)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, func() {}
	}
	ws := b.watchers[d]
	if ws == nil {
		ws = make(map[*watcher]struct{})
		b.watchers[d] = ws
	}
	ws[w] = struct{}{}
	if !b.listening {
		b.listening = true
		b.listenDone = make(chan struct{})
		b.listenErr = errors.New("not connected yet")
		go b.listen()
	}
	var once sync.Once
	return w.ch, func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if ws := b.watchers[d]; ws != nil {
				delete(ws, w)
				if len(ws) == 0 {
					delete(b.watchers, d)
				}
			}
		})
	}
}

func wake(ws map[*watcher]struct{}) {
	for w := range ws {
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
}

// listen is the listener goroutine: connect, LISTEN, wake everyone, then
// dispatch notifications until the connection fails; then again, with
// backoff, until Close.
func (b *Backend) listen() {
	defer close(b.listenDone)
	backoff := backoffMin
	for {
		conn, err := b.connectListener()
		if err == nil {
			backoff = backoffMin
			b.setListening(true, nil)
			err = b.receive(conn)
			closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = conn.Close(closeCtx)
			cancel()
		}
		if b.ctx.Err() != nil {
			return
		}
		b.setListening(false, err)
		t := time.NewTimer(backoff)
		select {
		case <-b.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, backoffMax)
	}
}

// connectListener opens the listening connection and LISTENs.
func (b *Backend) connectListener() (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(b.ctx, listenPing)
	defer cancel()
	pc := b.pool.Config() // a copy: ours to change
	cfg := pc.ConnConfig
	// The pool's hooks, as pgxpool runs them for its own connections
	// (credentials set by BeforeConnect, session setup in AfterConnect).
	if pc.BeforeConnect != nil {
		if err := pc.BeforeConnect(ctx, cfg); err != nil {
			return nil, fmt.Errorf("connect: BeforeConnect: %w", err)
		}
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = make(map[string]string)
	}
	cfg.RuntimeParams["application_name"] = ListenerApplicationName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if pc.AfterConnect != nil {
		if err := pc.AfterConnect(ctx, conn); err != nil {
			_ = conn.Close(context.Background())
			return nil, fmt.Errorf("connect: AfterConnect: %w", err)
		}
	}
	if _, err := conn.Exec(ctx, b.listenSQL); err != nil {
		_ = conn.Close(context.Background())
		return nil, fmt.Errorf("%s: %w", b.listenSQL, err)
	}
	return conn, nil
}

// setListening records the listener's state; when it comes up, every
// watcher is woken: a release may have gone unheard while it was down.
func (b *Backend) setListening(up bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.listenUp, b.listenErr = up, err
	if up {
		for _, ws := range b.watchers {
			wake(ws)
		}
	}
}

// receive dispatches notifications until the connection fails or Close.
func (b *Backend) receive(conn *pgx.Conn) error {
	for {
		ctx, cancel := context.WithTimeout(b.ctx, listenIdle)
		n, err := conn.WaitForNotification(ctx)
		cancel()
		if err != nil {
			if b.ctx.Err() != nil {
				return b.ctx.Err()
			}
			if !errors.Is(err, context.DeadlineExceeded) || conn.IsClosed() {
				return err
			}
			// Idle: make sure the server is still there.
			pctx, pcancel := context.WithTimeout(b.ctx, listenPing)
			err = conn.Ping(pctx)
			pcancel()
			if err != nil {
				return fmt.Errorf("ping: %w", err)
			}
			continue
		}
		if n.Channel != b.channel {
			continue
		}
		b.mu.Lock()
		wake(b.watchers[n.Payload])
		b.mu.Unlock()
	}
}
