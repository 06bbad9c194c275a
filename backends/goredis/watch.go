package goredis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
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

// hub is a shared subscription: a Backend's only one outside Cluster mode,
// one per master in Cluster mode (see Backend.hubFor). Two goroutines serve
// it: the reader receives messages and fans them out (non-blocking) to buffered(1)
// watcher channels; the subscriber sends SUBSCRIBE/UNSUBSCRIBE as channels
// gain their first watcher or lose their last, so Watch and stop never block
// on the network.
type hub struct {
	// client subscribes and probes. In Cluster mode it is a master's node
	// client (go-redis's), so that the subscription stays on that master,
	// reconnects included; or, for the fallback hub, the ClusterClient.
	client redis.UniversalClient
	// cluster, in Cluster mode, has its slot map reloaded when the
	// subscription fails (see setDown).
	cluster *redis.ClusterClient
	addr    string // the master's address, for conditions ("" if not pinned)
	// slotKey: a key of the master's slots (the first watched through this
	// hub), to find the master that took over when the subscription fails
	// (see repin). "" if not pinned.
	slotKey     string
	inbox       string // the channel grants to this backend's waiters come on
	pattern     string // keyevent pattern, "" when off
	healthEvery time.Duration
	wait        time.Duration
	// grantsAsHints passes grants on as hints, so that the waiter takes
	// the key up with an Acquire (WithReplicaAcks: a grant's write was not
	// acknowledged by replicas when it was published).
	grantsAsHints bool

	mu          sync.Mutex
	entries     map[string]*entry
	waiters     map[string]*watcher // WatchWaiter watchers by waiter id
	ps          *redis.PubSub
	patternSent bool
	// patternConfirmed: the server confirmed the PSUBSCRIBE on ps.
	patternConfirmed bool
	// unsubAgain: channels whose SUBSCRIBE failed after they had lost their
	// watchers. go-redis lists them (and subscribes them on its next
	// reconnect), the server may not have them: the subscriber unsubscribes
	// them, unless they are watched again by then.
	unsubAgain []string
	state      subState
	downSince  time.Time
	lastErr    error
	// refused: the server's error reply to a command on the subscription
	// (a SUBSCRIBE refused with NOPERM by an ACL without channels, say),
	// until every channel sent, and the pattern, is confirmed. The link is
	// up (pongs come back, confirmed channels hear) but the refused
	// channels hear nothing.
	refused error
	started bool
	closed  bool

	kick chan struct{} // wakes the subscriber, cap 1
	// refusal tells the subscriber that the server refused a command: it
	// sends the unconfirmed channels again after a back-off. Cap 1.
	refusal chan struct{}
	done    chan struct{} // closed by close
	// ctx ends with close: for the calls through the client (the probe),
	// which closing the PubSub does not cut short.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// entry is one subscribed (or to-be-subscribed) channel.
type entry struct {
	watchers  map[*watcher]struct{}
	sent      bool          // SUBSCRIBE sent on the current PubSub
	confirmed bool          // the server confirmed it
	ready     chan struct{} // closed when confirmed
	idleSince time.Time     // when it lost its last watcher
}

// watcher is one Watch (ch, on a key's channel) or one WatchWaiter (turns,
// on the backend's inbox, for waiter).
type watcher struct {
	ch     chan struct{}
	turns  chan ctxlock.Handoff
	waiter string
	// late: add returned before the server confirmed the channel (the
	// wait timed out, was off, or the link was down). Whatever was
	// published from then until the confirmation was lost to w, although
	// its caller believes it listens: the confirmation hints w.
	late bool
}

// grant passes a hand-off to w, replacing a pending hint: a grant must not
// be lost behind one.
func (w *watcher) grant(h ctxlock.Handoff) {
	select {
	case <-w.turns:
	default:
	}
	w.turns <- h
}

// parseGrant parses an inbox message, "<token> <TTL ms> <waiter>", or a
// hint "0 0 <waiter>" (WithWaiterHints), which gives the zero Handoff.
func parseGrant(payload string) (waiter string, h ctxlock.Handoff, ok bool) {
	if w, ok := strings.CutPrefix(payload, "0 0 "); ok && w != "" {
		return w, ctxlock.Handoff{}, true
	}
	tok, rest, ok1 := strings.Cut(payload, " ")
	ttl, waiter, ok2 := strings.Cut(rest, " ")
	token, err1 := strconv.ParseUint(tok, 10, 64)
	ms, err2 := strconv.ParseInt(ttl, 10, 64)
	if !ok1 || !ok2 || err1 != nil || err2 != nil || token == 0 || ms <= 0 || waiter == "" {
		return "", ctxlock.Handoff{}, false
	}
	return waiter, ctxlock.Handoff{Token: token, TTL: time.Duration(ms) * time.Millisecond}, true
}

// hint wakes w to retry, unless a message is pending already.
func (w *watcher) hint() {
	if w.turns == nil {
		signal(w.ch)
		return
	}
	select {
	case w.turns <- ctxlock.Handoff{}:
	default:
	}
}

func newHub(client redis.UniversalClient, inbox, pattern string, healthEvery, wait time.Duration) *hub {
	ctx, cancel := context.WithCancel(context.Background())
	return &hub{
		ctx:         ctx,
		cancel:      cancel,
		client:      client,
		inbox:       inbox,
		waiters:     make(map[string]*watcher),
		pattern:     pattern,
		healthEvery: healthEvery,
		wait:        wait,
		entries:     make(map[string]*entry),
		kick:        make(chan struct{}, 1),
		refusal:     make(chan struct{}, 1),
		done:        make(chan struct{}),
	}
}

func (h *hub) watch(channel string) (<-chan struct{}, func()) {
	w := &watcher{ch: make(chan struct{}, 1)}
	if !h.add(channel, w) {
		return nil, func() {}
	}
	return w.ch, h.stopper(channel, w)
}

// watchWaiter registers waiter for the grants published on the inbox.
func (h *hub) watchWaiter(waiter string) (<-chan ctxlock.Handoff, func()) {
	w := &watcher{turns: make(chan ctxlock.Handoff, 1), waiter: waiter}
	if !h.add(h.inbox, w) {
		return nil, func() {}
	}
	return w.turns, h.stopper(h.inbox, w)
}

// add registers w on channel, starting the subscription on first use, and
// waits (bounded) for the server to confirm a new channel. When it returns
// before the confirmation, the confirmation hints w (see watcher.late). It
// reports false after close.
func (h *hub) add(channel string, w *watcher) bool {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return false
	}
	if !h.started {
		h.started = true
		h.ps = h.client.Subscribe(context.Background()) // no channels yet: no I/O
		h.wg.Add(2)
		go h.readLoop()
		go h.subscribeLoop()
	}
	e := h.entries[channel]
	if e == nil {
		e = &entry{watchers: make(map[*watcher]struct{}), ready: make(chan struct{})}
		h.entries[channel] = e
	}
	e.watchers[w] = struct{}{}
	if w.turns != nil {
		h.waiters[w.waiter] = w
	}
	needSend := !e.sent
	wait := !e.confirmed && h.state != subDown && h.refused == nil && h.wait > 0
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
	h.mu.Lock()
	if !e.confirmed {
		w.late = true
	}
	h.mu.Unlock()
	return true
}

// stopper returns the stop function of w's watch on channel.
func (h *hub) stopper(channel string, w *watcher) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			e := h.entries[channel]
			unsub := false
			if e != nil {
				delete(e.watchers, w)
				if h.waiters[w.waiter] == w {
					delete(h.waiters, w.waiter)
				}
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
			if w.turns == nil {
				signal(w.ch)
			}
		}
	}
}

func (h *hub) wakeAllLocked() {
	for _, e := range h.entries {
		for w := range e.watchers {
			w.hint()
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
	retryTimer := time.NewTimer(time.Hour)
	retryTimer.Stop()
	defer retryTimer.Stop()
	resendTimer := time.NewTimer(time.Hour)
	resendTimer.Stop()
	defer resendTimer.Stop()
	delay := minReconnectDelay
	refusalDelay := minReconnectDelay
	for {
		select {
		case <-h.done:
			return
		case <-h.kick:
		case <-idleTimer.C:
		case <-retryTimer.C:
		case <-h.refusal:
			resendTimer.Reset(refusalDelay)
			refusalDelay = min(2*refusalDelay, maxReconnectDelay)
			continue
		case <-resendTimer.C:
			if !h.resend() {
				refusalDelay = minReconnectDelay
			}
		}
		for {
			h.mu.Lock()
			ps := h.ps
			now := time.Now()
			var sub, unsub, idle []string
			var nextIdle time.Time
			for _, ch := range h.unsubAgain {
				if h.entries[ch] == nil {
					unsub = append(unsub, ch)
				}
			}
			h.unsubAgain = nil
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
			ctx, cancel := context.WithTimeout(h.ctx, h.healthEvery)
			var errs [3]error
			if pattern != "" {
				errs[0] = ps.PSubscribe(ctx, pattern)
			}
			if len(unsub) > 0 {
				errs[1] = ps.Unsubscribe(ctx, unsub...)
			}
			if len(sub) > 0 {
				errs[2] = ps.Subscribe(ctx, sub...)
			}
			cancel()
			select {
			case <-h.done:
				return
			default:
			}
			if err := errors.Join(errs[:]...); err != nil {
				// A command that fails on a broken connection makes go-redis
				// reconnect inside it, resubscribing the channels it knew
				// before the call, not those of the call (it adds them to
				// its set only after), and the reader, busy elsewhere
				// meanwhile, may never see an error. So: the link was down
				// (the watchers are woken once it is back, as what was
				// published meanwhile was lost), and every watched channel is
				// sent again, after a pause (a server that is down fails at
				// once). Idle ones keep sent: their UNSUBSCRIBE still goes
				// out when they have lingered. But those of this call that
				// lost their watchers meanwhile may not be subscribed: a
				// watcher coming back while they linger would not be.
				// They are dropped, with an UNSUBSCRIBE (go-redis lists
				// them).
				h.setDown(err)
				h.mu.Lock()
				if h.ps == ps {
					for _, ch := range sub {
						if e := h.entries[ch]; e != nil && len(e.watchers) == 0 {
							delete(h.entries, ch)
							h.unsubAgain = append(h.unsubAgain, ch)
						}
					}
					for _, e := range h.entries {
						if len(e.watchers) > 0 {
							e.sent = false
						}
					}
					h.patternSent = false
				}
				h.mu.Unlock()
				retryTimer.Reset(delay)
				delay = min(2*delay, maxReconnectDelay)
				break
			}
			delay = minReconnectDelay
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
		// A reconnect go-redis makes inside this call (dial, HELLO, with the
		// PubSub locked, which close must take) waits for a server that does
		// not answer only as long as the context allows: go-redis heeds its
		// deadline (with ContextTimeoutEnabled), not its cancellation.
		rctx, cancel := context.WithTimeout(h.ctx, 2*h.healthEvery)
		msg, err := ps.ReceiveTimeout(rctx, h.healthEvery)
		cancel()
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
					// While waiters listen on the inbox, publish to it
					// through the client instead, which proves the route
					// too: a subscription can be alive but on a server that
					// no longer hears the releases, as a master demoted by
					// a planned Sentinel failover, until it replicates the
					// new one, or forever if it never does.
					pingPending = true
					ctx, cancel := context.WithTimeout(h.ctx, h.healthEvery)
					// A probe that fails says nothing about the
					// subscription (through the fallback hub's
					// ClusterClient it goes to any master, not the
					// subscription's): it pings then.
					if !h.inboxConfirmed() || h.client.Publish(ctx, h.inbox, inboxProbe).Err() != nil {
						cancel()
						ctx, cancel = context.WithTimeout(h.ctx, h.healthEvery)
						if err := ps.Ping(ctx); err != nil {
							// A PING that fails on a broken connection makes
							// go-redis reconnect inside it (resubscribing):
							// what was published meanwhile was lost, so the
							// link was down, and the watchers are woken when
							// the next reply shows it is back.
							h.setDown(err)
						}
					}
					cancel()
					continue
				}
				// The ping or probe went unanswered: drop the connection,
				// start over.
				h.setDown(fmt.Errorf("no reply to ping within %v", h.healthEvery))
				if !h.repin() {
					h.reset()
				}
				pingPending = false
				continue
			}
			pingPending = false
			if rerr := redis.Error(nil); errors.As(err, &rerr) {
				// The server refused a command: the link is up, and the
				// channels it confirmed still hear.
				delay = minReconnectDelay
				h.refuse(ps, err)
				continue
			}
			h.setDown(err)
			h.repin()
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

// refuse records the server's refusal of a command on ps (err), and has
// the subscriber send the unconfirmed channels again after its back-off.
// Watches waiting for a confirmation stop waiting: their callers poll.
func (h *hub) refuse(ps *redis.PubSub, err error) {
	h.mu.Lock()
	if h.closed || h.ps != ps {
		h.mu.Unlock()
		return
	}
	h.refused = err
	for _, e := range h.entries {
		if !e.confirmed {
			close(e.ready)
			e.ready = make(chan struct{})
		}
	}
	h.mu.Unlock()
	select {
	case h.refusal <- struct{}{}:
	default:
	}
}

// resend marks for sending again, after the server refused a command (the
// reply does not say which), the channels not confirmed yet, and the
// pattern: the refusal may be temporary, or an operator may fix the ACL.
// Those without watchers are dropped instead, with an UNSUBSCRIBE (go-redis
// lists them), as after a failed SUBSCRIBE (see subscribeLoop). It reports
// false when no refusal is outstanding any more.
func (h *hub) resend() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || h.refused == nil {
		return false
	}
	for ch, e := range h.entries {
		if e.confirmed || !e.sent {
			continue
		}
		if len(e.watchers) == 0 {
			delete(h.entries, ch)
			h.unsubAgain = append(h.unsubAgain, ch)
			continue
		}
		e.sent = false
	}
	if !h.patternConfirmed {
		h.patternSent = false
	}
	return true
}

// allConfirmedLocked reports whether the server confirmed every channel
// sent or watched, and the pattern.
func (h *hub) allConfirmedLocked() bool {
	if h.pattern != "" && !h.patternConfirmed {
		return false
	}
	for _, e := range h.entries {
		if !e.confirmed && (e.sent || len(e.watchers) > 0) {
			return false
		}
	}
	return true
}

// inboxProbe is what the hub publishes on its own inbox to check that the
// subscription hears what the client publishes (parseGrant ignores it).
const inboxProbe = "probe"

// inboxConfirmed reports whether the inbox channel is subscribed and
// confirmed.
func (h *hub) inboxConfirmed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.entries[h.inbox]
	return e != nil && e.confirmed
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
		// A channel whose SUBSCRIBE the server has not confirmed yet (this
		// reply may be another's, as the PSUBSCRIBE that goes first after
		// a reset) still misses what is published until it does: its
		// confirmation wakes its watchers once more.
		for _, e := range h.entries {
			if !e.confirmed {
				for w := range e.watchers {
					w.late = true
				}
			}
		}
	}
	switch m := msg.(type) {
	case *redis.Subscription:
		if m.Kind == "psubscribe" {
			h.patternConfirmed = true
		}
		if m.Kind == "subscribe" {
			if e := h.entries[m.Channel]; e != nil && !e.confirmed {
				e.confirmed = true
				close(e.ready)
				for w := range e.watchers {
					if w.late {
						w.late = false
						w.hint()
					}
				}
			}
		}
		if h.refused != nil && h.allConfirmedLocked() {
			h.refused = nil
		}
	case *redis.Message:
		channel := m.Channel
		switch {
		case m.Pattern != "":
			// keyevent: the payload is the expired key's name.
			channel = m.Payload + channelSuffix
		case channel == h.inbox:
			if waiter, g, ok := parseGrant(m.Payload); ok {
				if w := h.waiters[waiter]; w != nil {
					if g.Token == 0 || h.grantsAsHints {
						w.hint()
					} else {
						w.grant(g)
					}
				}
			}
			return
		}
		if e := h.entries[channel]; e != nil {
			for w := range e.watchers {
				w.hint()
			}
		}
	}
}

func (h *hub) setDown(err error) {
	if h.cluster != nil {
		// The fallback hub's subscription reconnects to the master of its
		// first channel's slot in the client's slot map, and new watches
		// go to the hub of their key's master in it, which go-redis would
		// not reload for a minute after that master died (see
		// Backend.wrap).
		h.cluster.ReloadState(context.Background())
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state != subDown {
		h.state = subDown
		h.downSince = time.Now()
	}
	h.lastErr = err
	h.patternConfirmed = false
	for _, e := range h.entries {
		if !e.confirmed {
			// Watches waiting for the server to confirm stop waiting: no
			// confirmation comes while the link is down, and their callers
			// poll meanwhile.
			close(e.ready)
		}
		e.confirmed = false
		e.ready = make(chan struct{})
	}
}

// repin, for a hub pinned to a Cluster master whose subscription failed,
// moves the subscription to the master of slotKey's slot when the client's
// slot map (which setDown has reloaded) names another node: after a
// failover the replica that took over, and its watchers' keys with it. It
// reports whether it did (with a reset). Only the reader calls it, which
// reads client without the lock.
func (h *hub) repin() bool {
	if h.cluster == nil || h.slotKey == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(h.ctx, h.healthEvery)
	node, err := h.cluster.MasterForKey(ctx, h.slotKey)
	cancel()
	if err != nil {
		return false
	}
	h.mu.Lock()
	moved := h.client != redis.UniversalClient(node) && !h.closed
	if moved {
		h.client, h.addr = node, node.Options().Addr
	}
	h.mu.Unlock()
	if moved {
		h.reset()
	}
	return moved
}

// on reports whether h subscribes through node (it has not moved: repin).
func (h *hub) on(node *redis.Client) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.client == redis.UniversalClient(node)
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
	h.patternConfirmed = false
	h.unsubAgain = nil
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
	if !h.started || h.closed {
		return ""
	}
	if h.state != subDown {
		if h.refused != nil {
			msg := strings.TrimPrefix(h.refused.Error(), "redis: ")
			if h.addr != "" {
				msg += " (master " + h.addr + ")"
			}
			return fmt.Sprintf("redis: release subscription refused by the server: %s (waiters poll)", msg)
		}
		return ""
	}
	msg := "unknown error"
	if h.lastErr != nil {
		msg = strings.TrimPrefix(h.lastErr.Error(), "redis: ")
	}
	if h.addr != "" {
		msg += " (master " + h.addr + ")"
	}
	return fmt.Sprintf("redis: release subscription down for %s: %s (waiters poll)", since(h.downSince), msg)
}

func (h *hub) close() {
	if h.stop(false) {
		h.join()
	}
}

// stop marks h closed (add fails from then on) and tells its goroutines to
// stop, without waiting for them (join does). With idleOnly it does so only
// if h has started and has no channel left, not even a lingering one. It
// reports whether it stopped h.
func (h *hub) stop(idleOnly bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || idleOnly && (!h.started || len(h.entries) > 0) {
		return false
	}
	h.closed = true
	close(h.done)
	h.cancel()
	h.wakeAllLocked()
	return true
}

// join closes the PubSub of h, stopped, and waits for its goroutines.
func (h *hub) join() {
	h.mu.Lock()
	ps := h.ps // no reset replaces it once closed
	h.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
	}
	h.wg.Wait()
}
