// Package testport picks loopback ports for the servers that tests start
// (redis-server, PostgreSQL).
package testport

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// lowBase is the lowest port Free picks.
const lowBase = 20000

// Free returns a port free on 127.0.0.1 now, never 5432 or 6379 (the
// machine's own PostgreSQL and Redis). It prefers one below the kernel's
// ephemeral range, which no listener on port 0 and no outgoing connection
// is given: a server killed for a restart leaves its port free, and a port
// of the ephemeral range can be handed meanwhile to a proxy or a server of
// a test running in parallel (the restart then fails to bind).
func Free() (int, error) {
	if lo := ephemeralLow(); lo > lowBase+1000 {
		for range 50 {
			port := lowBase + rand.IntN(lo-lowBase)
			if l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
				_ = l.Close()
				return port, nil
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ephemeralLow returns the low end of the kernel's ephemeral port range, 0
// when unknown.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	lo, _ := strconv.Atoi(f[0])
	return lo
}
