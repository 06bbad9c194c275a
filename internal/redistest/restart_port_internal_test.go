package redistest

import (
	"bufio"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
)

// A port taken by another process while the server was down (killed for a
// Restart) fails the start: TestServerRestartWithWaiters (reliability), in
// a full parallel run, once went on against another package's server (or
// proxy) that had been given the port, saw an empty dataset after an AOF
// restart, and reported the fencing tokens starting again at 1. start
// accepted any +PONG on the port before noticing that its own process had
// exited on "Address already in use".
func TestStartRefusesAnotherProcessOnThePort(t *testing.T) {
	s := StartServer(t)
	s.Kill()
	// The thief answers like a Redis. It listens on a port of its own, and
	// start pings there: as if it held the server's port, which the
	// server (started on its own port) does not see.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s.port = ln.Addr().(*net.TCPAddr).Port
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					switch {
					case strings.HasPrefix(line, "PING"):
						_, _ = c.Write([]byte("+PONG\r\n"))
					case strings.HasPrefix(line, "INFO"):
						body := "# Server\r\nprocess_id:1\r\n"
						_, _ = c.Write([]byte("$" + strconv.Itoa(len(body)) + "\r\n" + body + "\r\n"))
					}
				}
			}()
		}
	}()
	if err := s.start(); !errors.Is(err, errBind) {
		t.Fatalf("start with another process answering on port %d: %v; want errBind", s.Port(), err)
	}
}
