package etcd_test

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock"
	"github.com/ctxlock/ctxlock/internal/etcdtest"
)

// rpcsStarted returns how many RPCs of method the member has started
// (its grpc_server_started_total counter).
func rpcsStarted(t *testing.T, s *etcdtest.Server, method string) int {
	t.Helper()
	resp, err := http.Get("http://" + s.Addr() + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	prefix := `grpc_server_started_total{grpc_method="` + method + `",`
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, prefix) {
			n, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", line, err)
			}
			return int(n)
		}
	}
	t.Fatalf("no %s counter in the member's metrics", method)
	return 0
}

// With etcd authentication on, refreshing a hold must not authenticate the
// client again (a bcrypt password check and a raft proposal on the server,
// tens of milliseconds) on every Extend. clientv3's stream interceptor
// calls Authenticate each time a stream is opened, and Extend opens a
// LeaseKeepAlive stream per call.
func TestExtendDoesNotAuthenticateEachTime(t *testing.T) {
	s := startWithAuth(t)
	b := newBackend(t, authClient(t, s, "locker"))
	ctx := testCtx(t, 60*time.Second)
	l, err := b.Acquire(ctx, ctxlock.AcquireRequest{Key: "k", Owner: "o", TTL: 10 * time.Second, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	before := rpcsStarted(t, s, "Authenticate")
	start := time.Now()
	for range n {
		if errs := b.Extend(ctx, []ctxlock.Lease{l}, 10*time.Second); errs[0] != nil {
			t.Fatal(errs[0])
		}
	}
	took := time.Since(start)
	auths := rpcsStarted(t, s, "Authenticate") - before
	t.Logf("%d Extends: %v, %d Authenticate RPCs", n, took, auths)
	if auths > 1 {
		t.Fatalf("%d Extends made %d Authenticate RPCs (%v per Extend); want at most one", n, auths, took/n)
	}
}
