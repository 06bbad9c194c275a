package redlock_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/stresstest"
)

// TestStressRedlock stresses Managers sharing a redlock Backend over three
// independent redis-servers in real time (see internal/stresstest): Lock,
// TryLock, Do, Unlock, Health and Close racing on real goroutines, every
// call bounded, holds checked for mutual exclusion, keys free afterwards.
func TestStressRedlock(t *testing.T) {
	c := startNodes(t, 3)
	cfg := stresstest.Default
	cfg.Inspect = c.inspect
	stresstest.Run(t, func(t *testing.T) ctxlock.Backend { return newBackend(t, c.clients) }, cfg)
}

// inspect lists, per node, the keys of key's lock (lease, fence counter,
// queues) with their TTL and value.
func (c *cluster) inspect(key string) string {
	ctx := context.Background()
	var sb strings.Builder
	for i, cl := range c.clients {
		keys, _, err := cl.Scan(ctx, 0, "*"+key+"*", 100).Result()
		fmt.Fprintf(&sb, "node %d (scan: %v):\n", i, err)
		for _, k := range keys {
			typ := cl.Type(ctx, k).Val()
			var val any
			switch typ {
			case "string":
				val = cl.Get(ctx, k).Val()
			case "hash":
				val = cl.HGetAll(ctx, k).Val()
			case "list":
				val = cl.LRange(ctx, k, 0, -1).Val()
			}
			fmt.Fprintf(&sb, "  %s %s pttl=%v %v\n", k, typ, cl.PTTL(ctx, k).Val(), val)
		}
	}
	return sb.String()
}
