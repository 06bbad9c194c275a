package goredis

import (
	"strings"
	"testing"
	"time"
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

// An inbox message is a grant "<token> <TTL ms> <waiter>" or a hint
// "0 0 <waiter>"; anything else is ignored.
func TestParseGrant(t *testing.T) {
	for _, tc := range []struct {
		payload string
		waiter  string
		token   uint64
		ttl     time.Duration
		ok      bool
	}{
		{"7 3000 w1", "w1", 7, 3 * time.Second, true},
		{"7 3000 w 1", "w 1", 7, 3 * time.Second, true},
		{"0 0 w1", "w1", 0, 0, true},
		{"0 0 ", "", 0, 0, false},
		{"0 3000 w1", "", 0, 0, false},
		{"7 0 w1", "", 0, 0, false},
		{"7 3000 ", "", 0, 0, false},
		{"x 3000 w1", "", 0, 0, false},
		{"7 3000", "", 0, 0, false},
		{"", "", 0, 0, false},
		{inboxProbe, "", 0, 0, false},
	} {
		w, h, ok := parseGrant(tc.payload)
		if ok != tc.ok || w != tc.waiter || h.Token != tc.token || h.TTL != tc.ttl {
			t.Errorf("parseGrant(%q) = %q, %+v, %v; want %q, token %d, TTL %v, %v", tc.payload, w, h, ok, tc.waiter, tc.token, tc.ttl, tc.ok)
		}
	}
}

// Scripts stopped by a migrating slot or a cluster that is down are
// retried, in the words of Redis 7 and of Redis 6; other script errors are
// not.
func TestScriptRedirectIsTransient(t *testing.T) {
	for _, tc := range []struct {
		reply string
		want  bool
	}{
		{"ERR Script attempted to access a non local key in a cluster node script: 1a2b, on @user_script:148.", true},
		{"ERR Error running script (call to f_1a2b): @user_script:148: @user_script: 148: Lua script attempted to access a non local key in a cluster node", true},
		{"ERR Script attempted to execute a command while the cluster is down script: 1a2b", true},
		{"ERR Script attempted to execute a write command while the cluster is down and readonly", true},
		{"ERR Error running script (call to f_1a2b): @user_script:3: Script attempted to access nonexistent global variable 'x'", false},
		{"WRONGTYPE Operation against a key holding the wrong kind of value", false},
	} {
		if got := isTransient(serverError(tc.reply)); got != tc.want {
			t.Errorf("isTransient(%q) = %v, want %v", tc.reply, got, tc.want)
		}
	}
}

// serverError is an error reply from the server, as go-redis returns them
// (a redis.Error).
type serverError string

func (e serverError) Error() string { return string(e) }
func (serverError) RedisError()     {}
