package etcd_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/etcd"
	"github.com/ctxlock/ctxlock/internal/stresstest"
)

// TestStress stresses Managers sharing a Backend on one real server in real
// time (see internal/stresstest): Lock, TryLock, Do, Unlock, Health and
// Close racing on real goroutines, every call bounded, holds checked for
// mutual exclusion and increasing tokens, keys free afterwards. Each case
// has a key prefix of its own.
func TestStress(t *testing.T) {
	_, client := start(t)
	var b *etcd.Backend
	cfg := stresstest.Default
	cfg.Inspect = func(key string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := client.Get(ctx, b.LockKey(key))
		if err != nil {
			return fmt.Sprintf("key %q: %v", key, err)
		}
		if len(resp.Kvs) == 0 {
			return fmt.Sprintf("key %q: none", key)
		}
		kv := resp.Kvs[0]
		ttl, err := client.TimeToLive(ctx, clientv3LeaseID(kv.Lease))
		return fmt.Sprintf("key %q: owner %q, revision %d, lease %x (TTL %v, %v)", key, kv.Value, kv.ModRevision, kv.Lease, ttl, err)
	}
	stresstest.Run(t, func(t *testing.T) ctxlock.Backend {
		b = newBackend(t, client, etcd.WithPrefix(fmt.Sprintf("stress-%s/", t.Name())))
		return b
	}, cfg)
}
