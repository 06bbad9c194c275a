package redlock_test

import (
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/backends/redlock"
)

// New refuses a nil pointer client in the interface (a nil *redis.Client
// or *redis.ClusterClient, not == nil) with ErrInvalidOption, as it does a
// nil client: it used to pass the nil check and panic reading its options.
func TestNewTypedNilClient(t *testing.T) {
	for name, nilClient := range map[string]redis.UniversalClient{
		"*redis.Client":        (*redis.Client)(nil),
		"*redis.ClusterClient": (*redis.ClusterClient)(nil),
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("New with a nil %s panicked: %v; want an error matching ErrInvalidOption", name, r)
				}
			}()
			_, err := redlock.New([]redis.UniversalClient{nilClient})
			if !errors.Is(err, ctxlock.ErrInvalidOption) {
				t.Fatalf("New with a nil %s: %v; want ErrInvalidOption", name, err)
			}
		})
	}
}
