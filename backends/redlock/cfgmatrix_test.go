package redlock_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/locktest"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// TestConformanceNodeConfigs runs the suite on three nodes whose clients
// and servers are configured unusually: node by node differently, or two
// nodes misconfigured differently (a quorum still locks).
func TestConformanceNodeConfigs(t *testing.T) {
	cases := []struct {
		name  string
		nodes [3]func(t *testing.T, s *redistest.Server) *redis.Client
	}{
		{"Mixed", [3]func(*testing.T, *redistest.Server) *redis.Client{
			func(t *testing.T, s *redistest.Server) *redis.Client {
				return s.Client(t, func(o *redis.Options) { o.PoolSize, o.MaxActiveConns, o.PipelinePoolSize = 1, 1, -1 })
			},
			func(t *testing.T, s *redistest.Server) *redis.Client {
				return s.Client(t, func(o *redis.Options) { o.Protocol, o.DB = 2, 3 })
			},
			func(t *testing.T, s *redistest.Server) *redis.Client {
				return s.Client(t, func(o *redis.Options) { o.ContextTimeoutEnabled, o.MaxRetries = false, 0 })
			},
		}},
		// One node whose user may not subscribe (it grants, but hears no
		// releases) and one out of memory (it refuses every write): the
		// quorum is the plain node and the deaf one.
		{"OneNodeDeafOneOOM", [3]func(*testing.T, *redistest.Server) *redis.Client{
			plain,
			func(t *testing.T, s *redistest.Server) *redis.Client {
				if err := s.Client(t).Do(context.Background(), "ACL", "SETUSER", "locker", "on", ">pw", "~*", "resetchannels", "+@all").Err(); err != nil {
					t.Fatal(err)
				}
				return s.Client(t, func(o *redis.Options) { o.Username, o.Password = "locker", "pw" })
			},
			func(t *testing.T, s *redistest.Server) *redis.Client {
				admin := s.Client(t)
				if err := admin.ConfigSet(context.Background(), "maxmemory-policy", "noeviction").Err(); err != nil {
					t.Fatal(err)
				}
				if err := admin.ConfigSet(context.Background(), "maxmemory", "1").Err(); err != nil {
					t.Fatal(err)
				}
				return s.Client(t)
			},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			servers := redistest.StartNodes(t, 3)
			var clients []redis.UniversalClient
			for i, s := range servers {
				clients = append(clients, tc.nodes[i](t, s))
			}
			locktest.Run(t, func(t *testing.T) ctxlock.Backend {
				b := newBackend(t, clients)
				return &faultyBackend{RelockingOutage: locktest.NewRelockingOutage(b), rb: b, clients: clients}
			}, locktest.WithTTL(time.Second))
		})
	}
}

func plain(t *testing.T, s *redistest.Server) *redis.Client { return s.Client(t) }
