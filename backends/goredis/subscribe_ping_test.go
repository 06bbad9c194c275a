package goredis_test

import (
	"errors"
	"testing"
	"time"
)

// The inbox probe fails (in Cluster mode it may go to another master), so
// the reader pings on the subscription's connection, which was reset
// meanwhile. The PING fails and go-redis reconnects inside it, subscribing
// its channels again; the reader then reads on the new connection as if
// nothing had happened. A grant published while the connection was down
// was lost: its waiter must be told to look again once the subscription is
// back, or it sleeps until its retry while the key sits granted to it.
func TestFailedPingReconnectHintsWaiters(t *testing.T) {
	_, _, _, hold, turns := grantLostDuringProbe(t, errors.New("probe failed"))
	drain(hold.dials)
	close(hold.let) // the probe fails: the reader pings
	select {
	case <-hold.dials: // the PING failed and go-redis reconnected
	case <-time.After(waitLong):
		t.Fatal("no reconnect after the failed PING")
	}
	select {
	case <-turns:
	case <-time.After(3 * time.Second):
		t.Fatal("w1 heard nothing after its process's subscription was re-established inside a failed PING: the grant published while it was down is lost to it")
	}
}
