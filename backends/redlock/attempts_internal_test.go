package redlock

import (
	"testing"
	"testing/synctest"
)

// A node's release waits for the calls on its key that had started, not
// for those started after it: on a key that stays busy it would otherwise
// wait for as long as the attempts keep coming.
func TestAttemptsWaitIgnoresLaterCalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var a attempts
		first := a.start("k", 2)
		returned := make(chan bool, 1)
		go func() { returned <- a.wait(1, "k") }()
		synctest.Wait() // waiting for first[1]
		later := a.start("k", 2)
		a.end(0, "k", first[0])
		a.end(1, "k", first[1])
		synctest.Wait()
		select {
		case waited := <-returned:
			if !waited {
				t.Error("wait reported no call, with one running")
			}
		default:
			t.Fatal("wait still waits, for a call started after it")
		}
		if a.wait(0, "other") {
			t.Error("wait on a key with no call reported one")
		}
		a.end(0, "k", later[0])
		a.end(1, "k", later[1])
		if len(a.m) != 0 {
			t.Errorf("%d entries left after every call ended", len(a.m))
		}
	})
}
