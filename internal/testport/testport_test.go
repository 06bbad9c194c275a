package testport

import (
	"net"
	"strconv"
	"testing"
)

func TestFreeIsBindable(t *testing.T) {
	for range 20 {
		port, err := Free()
		if err != nil {
			t.Fatal(err)
		}
		if port == 5432 || port == 6379 || port <= 0 {
			t.Fatalf("Free returned port %d", port)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatalf("port %d from Free cannot be bound: %v", port, err)
		}
		_ = l.Close()
	}
}
