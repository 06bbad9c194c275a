package etcd_test

import (
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/chaostest"
	"github.com/ctxlock/ctxlock/internal/etcdtest"
)

// Three Managers (each on its own Backend and its own client, as processes
// would be) contend for two keys while the one member is killed and
// restarted, then frozen (SIGSTOP) for longer than the TTL. The checker
// fails on any overlap of holds (ended when the holder unlocked or saw its
// expiry channel close) and on any fencing token that does not increase;
// and work goes on after each fault (see internal/chaostest).
func TestChaosKillRestartFreezeNoOverlap(t *testing.T) {
	s := etcdtest.Start(t)
	const ttl = time.Second
	var managers []*ctxlock.Manager
	for range 3 {
		b := newBackend(t, newClient(t, s.Addr()))
		managers = append(managers, newManager(t, b, ctxlock.WithDefaultLockOptions(ctxlock.WithTTL(ttl), ctxlock.WithDriftFactor(0.1))))
	}
	chaostest.Run(t, managers, ttl,
		chaostest.KillRestart(s.Kill, s.Restart),
		chaostest.Freeze(s.Stop, s.Cont),
	)
}
