package main

import "testing"

func TestRESPParser(t *testing.T) {
	req := "*3\r\n$3\r\nSET\r\n$1\r\n*\r\n$5\r\nx\r\n*y\r\n" + "*1\r\n$4\r\nPING\r\n" + "PING\r\n"
	var p respParser
	if n := p.feed([]byte(req)); n != 3 {
		t.Fatalf("whole: %d commands, want 3", n)
	}
	// Byte by byte gives the same count.
	var q respParser
	n := 0
	for i := range len(req) {
		n += q.feed([]byte{req[i]})
	}
	if n != 3 {
		t.Fatalf("bytewise: %d commands, want 3", n)
	}
}
