package goredis

import (
	"testing"

	"github.com/redis/go-redis/v9"
)

// After a reconnect the first reply (here the PSUBSCRIBE's of expiry
// notifications) wakes every watcher, but a channel whose own SUBSCRIBE the
// server has not processed yet still misses what is published meanwhile: a
// watcher that looked again on the first wake-up and went back to waiting
// would sleep through a release published in that gap. Its channel's
// confirmation must wake it once more.
func TestWatcherHintedAgainWhenItsChannelIsReconfirmed(t *testing.T) {
	h := newHub(nil, "inbox", "__keyevent@0__:expired", 0, 0)
	w := &watcher{ch: make(chan struct{}, 1)}
	h.entries["k:released"] = &entry{
		watchers: map[*watcher]struct{}{w: {}},
		sent:     true, // resent after the reset, not confirmed yet
		ready:    make(chan struct{}),
	}
	h.state = subDown

	h.handle(&redis.Subscription{Kind: "psubscribe", Channel: h.pattern})
	select {
	case <-w.ch: // the caller looks again, is refused, waits again
	default:
		t.Fatal("the first reply after the reconnect did not wake the watcher")
	}

	h.handle(&redis.Subscription{Kind: "subscribe", Channel: "k:released"})
	select {
	case <-w.ch:
	default:
		t.Fatal("the channel's confirmation did not wake its watcher: a release published before it is lost")
	}
}
