package goredis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// A channel that loses its last watcher stays subscribed for idleLinger (at
// most maxIdleChannels of them, oldest dropped first): a key that is waited
// for again soon, as contended keys are, then costs no SUBSCRIBE and
// UNSUBSCRIBE per wait, and the next watcher needs no confirmation round trip.
const (
	idleLinger      = 30 * time.Second
	maxIdleChannels = 1024
)

// Backoff of the subscription's reconnect attempts.
const (
	minReconnectDelay = 20 * time.Millisecond
	maxReconnectDelay = time.Second
)

type subState int

const (
	subStarting subState = iota // no confirmation seen yet
	subUp
	subDown
)

// hub is a Backend's one shared subscription. Two goroutines serve it: the
// reader receives messages and fans them out (non-blocking) to buffered(1)
// watcher channels; the subscriber sends SUBSCRIBE/UNSUBSCRIBE as channels
// gain their first watcher or lose their last, so Watch and stop never block
// on the network.
type hub struct {
	client      redis.UniversalClient
	pattern     string // keyevent pattern, "" when off
	healthEvery time.Duration
	wait        time.Duration

	mu          sync.Mutex
	entries     map[string]*entry
	ps          *redis.PubSub
	patternSent bool
	state       subState
	downSince   time.Time
	lastErr     error
	started     bool
	closed      bool

	kick chan struct{} // wakes the subscriber, cap 1
	done chan struct{} // closed by close
	wg   sync.WaitGroup
}

// entry is one subscribed (or to-be-subscribed) channel.
type entry struct {
	watchers  map[*watcher]struct{}
	sent      bool          // SUBSCRIBE sent on the current PubSub
	confirmed bool          // the server confirmed it
	ready     chan struct{} // closed when confirmed
	idleSince time.Time     // when it lost its last watcher
}

type watcher struct {
	ch     chan struct{}
	waiter string // the queued waiter it is for; "" hears every release
}

// hears reports whether a release notification with payload is for w: the
// payload is the first queued waiter's id, or the lock key's name ("{…}")
// when nobody is queued.
func (w *watcher) hears(payload string) bool {
	return w.waiter == "" || w.waiter == payload || strings.HasPrefix(payload, "{")
}

func newHub(client redis.UniversalClient, pattern string, healthEvery, wait time.Duration) *hub {
	return &hub{
		client:      client,
		pattern:     pattern,
		healthEvery: healthEvery,
		wait:        wait,
		entries:     make(map[string]*entry),
		kick:        make(chan struct{}, 1),
		done:        make(chan struct{}),
	}
}

func (h *hub) watch(channel string) (<-chan struct{}, func()) { return h.watchFor(channel, "") }

// watchFor is watch for the queued waiter waiter ("" for any release).
func (h *hub) watchFor(channel, waiter string) (<-chan struct{}, func()) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, func() {}
	}
	if !h.started {
		h.started = true
		h.ps = h.client.Subscribe(context.Background()) // no channels yet: no I/O
		h.wg.Add(2)
		go h.readLoop()
		go h.subscribeLoop()
	}
	w := &watcher{ch: make(chan struct{}, 1), waiter: waiter}
	e := h.entries[channel]
	if e == nil {
		e = &entry{watchers: make(map[*watcher]struct{}), ready: make(chan struct{})}
		h.entries[channel] = e
	}
	e.watchers[w] = struct{}{}
	needSend := !e.sent
	wait := !e.confirmed && h.state != subDown && h.wait > 0
	ready := e.ready
	h.mu.Unlock()

	if needSend {
		h.poke()
	}
	if wait {
		t := time.NewTimer(h.wait)
		select {
		case <-ready:
		case <-t.C:
		case <-h.done:
		}
		t.Stop()
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			h.mu.Lock()
			e := h.entries[channel]
			unsub := false
			if e != nil {
				delete(e.watchers, w)
				if unsub = len(e.watchers) == 0; unsub {
					e.idleSince = time.Now()
				}
			}
			h.mu.Unlock()
			if unsub {
				h.poke()
			}
		})
	}
	return w.ch, stop
}

func (h *hub) poke() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// wake signals the watchers of channel that hear every release, without
// blocking. Queued waiters wait for the published notification: it names
// the one whose turn it is.
func (h *hub) wake(channel string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e := h.entries[channel]; e != nil {
		for w := range e.watchers {
			if w.waiter == "" {
				signal(w.ch)
			}
		}
	}
}

func (h *hub) wakeAllLocked() {
	for _, e := range h.entries {
		for w := range e.watchers {
			signal(w.ch)
		}
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// subscribeLoop brings the PubSub's channel set in line with the watched
// channels. It is the only goroutine that subscribes or unsubscribes, so the
// commands go out in the order the decisions were made.
func (h *hub) subscribeLoop() {
	defer h.wg.Done()
	idleTimer := time.NewTimer(time.Hour)
	idleTimer.Stop()
	defer idleTimer.Stop()
	for {
		select {
		case <-h.done:
			return
		case <-h.kick:
		case <-idleTimer.C:
		}
		for {
			h.mu.Lock()
			ps := h.ps
			now := time.Now()
			var sub, unsub, idle []string
			var nextIdle time.Time
			for ch, e := range h.entries {
				switch {
				case len(e.watchers) > 0 && !e.sent:
					e.sent = true
					sub = append(sub, ch)
				case len(e.watchers) == 0 && (!e.sent || now.Sub(e.idleSince) >= idleLinger):
					if e.sent {
						unsub = append(unsub, ch)
					}
					delete(h.entries, ch)
				case len(e.watchers) == 0:
					idle = append(idle, ch)
					if at := e.idleSince.Add(idleLinger); nextIdle.IsZero() || at.Before(nextIdle) {
						nextIdle = at
					}
				}
			}
			if extra := len(idle) - maxIdleChannels; extra > 0 {
				slices.SortFunc(idle, func(a, b string) int { return h.entries[a].idleSince.Compare(h.entries[b].idleSince) })
				for _, ch := range idle[:extra] {
					unsub = append(unsub, ch)
					delete(h.entries, ch)
				}
			}
			if !nextIdle.IsZero() {
				idleTimer.Reset(time.Until(nextIdle))
			}
			pattern := ""
			if h.pattern != "" && !h.patternSent {
				h.patternSent = true
				pattern = h.pattern
			}
			h.mu.Unlock()
			if len(sub) == 0 && len(unsub) == 0 && pattern == "" {
				break
			}
			// Errors are left to the reader: go-redis keeps the channel set
			// and resubscribes when it reconnects.
			ctx, cancel := context.WithTimeout(context.Background(), h.healthEvery)
			if pattern != "" {
				_ = ps.PSubscribe(ctx, pattern)
			}
			if len(unsub) > 0 {
				_ = ps.Unsubscribe(ctx, unsub...)
			}
			if len(sub) > 0 {
				_ = ps.Subscribe(ctx, sub...)
			}
			cancel()
			select {
			case <-h.done:
				return
			default:
			}
		}
	}
}

// readLoop receives from the PubSub until close.
func (h *hub) readLoop() {
	defer h.wg.Done()
	delay := minReconnectDelay
	pingPending := false
	for {
		h.mu.Lock()
		ps := h.ps
		h.mu.Unlock()
		msg, err := ps.ReceiveTimeout(context.Background(), h.healthEvery)
		select {
		case <-h.done:
			return
		default:
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if !pingPending {
					// Silent for a while: ask for a pong to prove the link.
					pingPending = true
					ctx, cancel := context.WithTimeout(context.Background(), h.healthEvery)
					_ = ps.Ping(ctx)
					cancel()
					continue
				}
				// The ping went unanswered: drop the connection, start over.
				h.setDown(fmt.Errorf("no reply to ping within %v", h.healthEvery))
				h.reset()
				pingPending = false
				continue
			}
			pingPending = false
			h.setDown(err)
			t := time.NewTimer(delay)
			select {
			case <-h.done:
				t.Stop()
				return
			case <-t.C:
			}
			delay = min(2*delay, maxReconnectDelay)
			continue
		}
		delay = minReconnectDelay
		pingPending = false
		h.handle(msg)
	}
}

// handle processes one received value; any value proves the link is up.
func (h *hub) handle(msg any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state != subUp {
		// (Re)connected: a release may have been missed meanwhile.
		h.state = subUp
		h.lastErr = nil
		h.wakeAllLocked()
	}
	switch m := msg.(type) {
	case *redis.Subscription:
		if m.Kind == "subscribe" {
			if e := h.entries[m.Channel]; e != nil && !e.confirmed {
				e.confirmed = true
				close(e.ready)
			}
		}
	case *redis.Message:
		channel, payload := m.Channel, m.Payload
		if m.Pattern != "" {
			// keyevent: the payload is the expired key's name; everyone hears it.
			channel = m.Payload + channelSuffix
		}
		if e := h.entries[channel]; e != nil {
			for w := range e.watchers {
				if w.hears(payload) {
					signal(w.ch)
				}
			}
		}
	}
}

func (h *hub) setDown(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state != subDown {
		h.state = subDown
		h.downSince = time.Now()
	}
	h.lastErr = err
	for _, e := range h.entries {
		if e.confirmed {
			e.confirmed = false
			e.ready = make(chan struct{})
		}
	}
}

// reset replaces the PubSub with a fresh one and has the subscriber send
// every watched channel again.
func (h *hub) reset() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	old := h.ps
	h.ps = h.client.Subscribe(context.Background())
	h.patternSent = false
	for _, e := range h.entries {
		e.sent = false
	}
	h.mu.Unlock()
	_ = old.Close()
	h.poke()
}

// condition describes a subscription problem, "" when there is none.
func (h *hub) condition() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.started || h.closed || h.state != subDown {
		return ""
	}
	msg := "unknown error"
	if h.lastErr != nil {
		msg = strings.TrimPrefix(h.lastErr.Error(), "redis: ")
	}
	return fmt.Sprintf("redis: release subscription down for %s: %s (waiters poll)", since(h.downSince), msg)
}

func (h *hub) close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	close(h.done)
	ps := h.ps
	h.wakeAllLocked()
	h.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
	}
	h.wg.Wait()
}
