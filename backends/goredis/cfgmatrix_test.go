package goredis_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/locktest"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// TestConformanceClientOptions runs the conformance suite through clients
// with unusual but valid go-redis options.
func TestConformanceClientOptions(t *testing.T) {
	cases := []struct {
		name   string
		server []string
		opt    func(*redis.Options)
	}{
		// One connection for everything: batcher, releases, health checks
		// (the subscription has its own).
		{"PoolSize1", nil, func(o *redis.Options) {
			o.PoolSize, o.MaxActiveConns, o.PipelinePoolSize, o.PoolTimeout = 1, 1, -1, 200*time.Millisecond
		}},
		{"NoDeadlines", nil, func(o *redis.Options) { o.ReadTimeout, o.WriteTimeout = -2, -2 }},
		{"NoContextTimeout", nil, func(o *redis.Options) { o.ContextTimeoutEnabled = false }},
		{"RESP2", nil, func(o *redis.Options) { o.Protocol = 2 }},
		// Settings that each change little, together: another DB, idle
		// connections kept, no retries, no identity but a name, a hook on
		// every connection, keyspace events on.
		{"Assorted", []string{"--notify-keyspace-events", "KEA"}, func(o *redis.Options) {
			o.DB, o.MinIdleConns, o.MaxRetries = 5, 4, 0
			o.DisableIdentity, o.ClientName = true, "ctxlock-test"
			o.OnConnect = func(ctx context.Context, cn *redis.Conn) error { return cn.Ping(ctx).Err() }
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := redistest.StartServer(t, redistest.WithArgs(tc.server...))
			var c *redis.Client
			if tc.opt != nil {
				c = s.Client(t, tc.opt)
			} else {
				c = s.Client(t)
			}
			locktest.Run(t, func(t *testing.T) ctxlock.Backend { return faulty(t, c) }, locktest.WithTTL(conformanceTTL))
		})
	}
}
