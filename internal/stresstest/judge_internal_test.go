package stresstest

import (
	"testing"
	"time"

	"github.com/ctxlock/ctxlock/backends/locktest"
)

// An overlap is excused only by lateness measured while the earlier hold
// lasted: a stall seconds away from it explains nothing about it. (The run
// measured one worst lateness for the whole run, so a single GC pause or
// preemption anywhere excused every overlap up to twice its length less
// the allowance, almost a whole ShortTTL, for the rest of the run.)
func TestJudgeExpiringExcusesOnlyLocalLateness(t *testing.T) {
	base := time.Now()
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	holds := []locktest.Hold{
		{Key: "k", Owner: "a", Token: 1, Start: at(0), End: at(100)},
		{Key: "k", Owner: "b", Token: 2, Start: at(70), End: at(150)}, // 30ms overlap
	}
	allowance := 42500 * time.Microsecond // the default ShortTTL × ShortDrift + 2ms
	// One 60ms stall, ten seconds after both holds ended.
	p := &latenessProbe{}
	p.record(at(10000), at(10061), 60*time.Millisecond)
	bad, excused := judgeExpiring(holds, p.worstDuring, allowance)
	if len(bad) != 1 || len(excused) != 0 {
		t.Fatalf("bad %q, excused %q; want the overlap reported: no lateness was measured while it happened", bad, excused)
	}
	// The same stall while the first hold lasted explains it.
	p = &latenessProbe{}
	p.record(at(40), at(101), 60*time.Millisecond)
	bad, excused = judgeExpiring(holds, p.worstDuring, allowance)
	if len(bad) != 0 || len(excused) != 1 {
		t.Fatalf("bad %q, excused %q; want the overlap excused", bad, excused)
	}
}
