package goredis

import (
	"strings"
	"testing"
)

// Each script's uncontended fast path comes before the queue helpers, whose
// definitions cost the server more than the path itself; and a checkout
// with Windows line ends builds the same scripts.
func TestScriptsFastPathBeforeTheQueueHelpers(t *testing.T) {
	for name, src := range map[string]string{"acquire": acquireSrc, "relock": relockSrc, "release": releaseSrc} {
		code := withoutComments(withQueue(src))
		ret, helpers := strings.Index(code, "return"), strings.Index(code, "local function")
		if ret < 0 || helpers < 0 || ret > helpers {
			t.Errorf("%s.lua: first return at %d, first helper at %d; want the fast path's return first", name, ret, helpers)
		}
		crlf := withQueue(strings.ReplaceAll(src, "\n", "\r\n"))
		if got, want := withoutComments(strings.ReplaceAll(crlf, "\r\n", "\n")), code; got != want {
			t.Errorf("%s.lua with CRLF line ends builds another script", name)
		}
	}
}

// withoutComments drops the Lua comment lines of src.
func withoutComments(src string) string {
	var b strings.Builder
	for line := range strings.Lines(src) {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			b.WriteString(line)
		}
	}
	return b.String()
}
