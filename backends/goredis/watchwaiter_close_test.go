package goredis_test

import (
	"testing"
	"time"

	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// Close wakes a WatchWaiter with a zero Handoff (a hint to retry), as
// WatchWaiter's documentation says, and WatchWaiter after Close returns a
// nil channel.
func TestWatchWaiterWokenByClose(t *testing.T) {
	s := redistest.StartServer(t)
	// WatchWaiter returns once the server confirmed the inbox, which has
	// hinted the waiter (the subscription came up): take that hint, so
	// that what follows is Close's.
	b := goredis.New(s.Client(t), goredis.WithSubscribeWait(time.Minute))
	turns, stop := b.WatchWaiter("k", "w")
	defer stop()
	select {
	case <-turns:
	default:
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case h := <-turns:
		if h.Token != 0 {
			t.Fatalf("Close sent %+v; want a zero Handoff", h)
		}
	default:
		t.Fatal("Close did not wake the waiter")
	}
	if ch, stop2 := b.WatchWaiter("k", "w2"); ch != nil {
		stop2()
		t.Fatal("WatchWaiter after Close returned a channel")
	}
}
