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
		{"PoolSize1", nil, func(o *redis.Options) {
			o.PoolSize, o.MaxActiveConns, o.PipelinePoolSize, o.PoolTimeout = 1, 1, -1, 200*time.Millisecond
		}},
		{"PoolSize2", nil, func(o *redis.Options) { o.PoolSize, o.MaxActiveConns, o.PipelinePoolSize = 2, 2, -1 }},
		{"MinIdleConns", nil, func(o *redis.Options) { o.MinIdleConns = 4 }},
		{"MaxRetries0", nil, func(o *redis.Options) { o.MaxRetries = 0 }},
		{"NoTimeouts", nil, func(o *redis.Options) { o.ReadTimeout, o.WriteTimeout = -1, -1 }},
		{"NoDeadlines", nil, func(o *redis.Options) { o.ReadTimeout, o.WriteTimeout = -2, -2 }},
		{"NoContextTimeout", nil, func(o *redis.Options) { o.ContextTimeoutEnabled = false }},
		{"RESP2", nil, func(o *redis.Options) { o.Protocol = 2 }},
		{"RESP3", nil, func(o *redis.Options) { o.Protocol = 3 }},
		{"DB5", nil, func(o *redis.Options) { o.DB = 5 }},
		{"Identity", nil, func(o *redis.Options) { o.DisableIdentity, o.ClientName = true, "ctxlock-test" }},
		{"OnConnect", nil, func(o *redis.Options) {
			o.OnConnect = func(ctx context.Context, cn *redis.Conn) error { return cn.ClientSetName(ctx, "hooked").Err() }
		}},
		{"NotifyKeyspace", []string{"--notify-keyspace-events", "KEA"}, nil},
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
