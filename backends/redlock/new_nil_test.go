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

// taggedClient is a client of a comparable type whose value is not
// comparable (a slice in an interface field): == on two of them panics.
type taggedClient struct {
	*redis.Client
	tag any
}

// New's check for a server passed twice must not panic on such clients
// (whether it can tell two wrappers of one client apart is another matter:
// it knows go-redis's own client types only).
func TestNewIncomparableClientValues(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("New panicked: %v", r)
		}
	}()
	b, err := redlock.New([]redis.UniversalClient{taggedClient{c, []int{1}}, taggedClient{c, []int{2}}})
	if err == nil {
		_ = b.Close()
	}
}
