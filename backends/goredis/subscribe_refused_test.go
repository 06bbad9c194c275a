package goredis_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxlock/ctxlock/backends/goredis"
	"github.com/ctxlock/ctxlock/internal/redistest"
)

// TestSubscriptionRefusedIsReported: a client whose ACL user may not use
// pub/sub channels (Redis 7 gives new users none unless acl-pubsub-default
// is allchannels) has every SUBSCRIBE refused with NOPERM, so no wake-up
// ever comes. Health must say so for as long as it lasts: the pongs that
// answer the subscription's health-check pings do not make it healthy.
// Once the operator grants the channels, the refused SUBSCRIBE is sent
// again and the condition clears.
func TestSubscriptionRefusedIsReported(t *testing.T) {
	s := redistest.StartServer(t)
	admin := s.Client(t)
	ctx := context.Background()
	c := userWithoutChannels(t, s)
	every := 50 * time.Millisecond
	b := newBackend(t, c, goredis.WithHealthCheckInterval(every), goredis.WithSubscribeWait(0))
	_, stop := b.Watch("k")
	defer stop()

	// Wait until the subscription has been refused and then answered
	// several times more: by the pongs of health-check PINGs, or by more
	// refusals of the SUBSCRIBE sent again.
	answered := func() int64 {
		return cmdStat(t, admin, "ping", "calls") + cmdStat(t, admin, "subscribe", "rejected_calls")
	}
	start := answered()
	deadline := time.Now().Add(waitLong)
	for cmdStat(t, admin, "subscribe", "rejected_calls") == 0 || answered() < start+4 {
		if time.Now().After(deadline) {
			t.Fatalf("the subscription was not refused and answered within %v", waitLong)
		}
		time.Sleep(5 * time.Millisecond) // polling the server's counters
	}
	conds, err := b.Health(ctx)
	if err != nil {
		t.Fatalf("Health: %v (a refused subscription is a condition, not an error)", err)
	}
	if !strings.Contains(strings.Join(conds, "\n"), "NOPERM") {
		t.Fatalf("Health conditions %q do not report the refused subscription", conds)
	}

	if err := admin.Do(ctx, "ACL", "SETUSER", "locker", "allchannels").Err(); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(waitLong)
	for {
		conds, err := b.Health(ctx)
		if err == nil && len(conds) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscription still reported after the channels were granted: %q %v", conds, err)
		}
		time.Sleep(5 * time.Millisecond) // polling the backend's state
	}
}

// cmdStat returns a field of INFO commandstats for cmd ("calls",
// "rejected_calls", ...), 0 when absent.
func cmdStat(t *testing.T, admin *redis.Client, cmd, field string) int64 {
	t.Helper()
	info, err := admin.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatalf("INFO commandstats: %v", err)
	}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || name != "cmdstat_"+cmd {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			if k, v, _ := strings.Cut(kv, "="); k == field {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n
			}
		}
	}
	return 0
}

// TestPatternRefusedKeepsChannels: with WithExpiryNotifications and an ACL
// that allows the release channels and the inbox but not the keyevent
// channel, the PSUBSCRIBE is refused (again after each back-off) while the
// channels are confirmed and hear what is published. The refusal must not
// be taken for an outage: the confirmed channels are not subscribed again
// (nor their watchers woken) at each refusal, and Health reports the
// refusal for as long as it lasts, not a subscription that is down, nor
// none once a channel's confirmation comes.
func TestPatternRefusedKeepsChannels(t *testing.T) {
	s := redistest.StartServer(t)
	admin := s.Client(t)
	ctx := context.Background()
	acl := append(append([]string(nil), minimalACL...), "+psubscribe", "+punsubscribe")
	if err := admin.Do(ctx, append([]any{"ACL", "SETUSER", "locker"}, anys(acl)...)...).Err(); err != nil {
		t.Fatal(err)
	}
	c := s.Client(t, func(o *redis.Options) { o.Username, o.Password = "locker", "pw" })
	b := newBackend(t, c, goredis.WithHealthCheckInterval(50*time.Millisecond), goredis.WithExpiryNotifications())
	_, stop := b.Watch("k")
	defer stop()
	_, stopW := b.WatchWaiter("k", "w1")
	defer stopW()

	deadline := time.Now().Add(waitLong)
	var first time.Time
	for {
		n := cmdStat(t, admin, "psubscribe", "rejected_calls")
		if n > 0 && first.IsZero() {
			first = time.Now()
		}
		if n >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the PSUBSCRIBE was not refused 5 times within %v", waitLong)
		}
		time.Sleep(5 * time.Millisecond) // polling the server's counters
	}
	// Sent again after a back-off that doubles from 20ms: four pauses.
	if d := time.Since(first); d < (20+40+80+160)*time.Millisecond {
		t.Errorf("5 refusals of the PSUBSCRIBE within %v: it is sent again without backing off", d)
	}
	// One SUBSCRIBE per channel, and perhaps one more each if the first
	// refusal came before their confirmation.
	if n := cmdStat(t, admin, "subscribe", "calls"); n > 4 {
		t.Errorf("%d SUBSCRIBE calls for 2 channels confirmed long ago: the refused PSUBSCRIBE has them sent again", n)
	}
	for range 20 {
		conds, err := b.Health(ctx)
		if err != nil {
			t.Fatalf("Health: %v", err)
		}
		if len(conds) != 1 || !strings.Contains(conds[0], "refused") || !strings.Contains(conds[0], "NOPERM") {
			t.Fatalf("Health conditions %q; want the refused subscription (NOPERM) alone", conds)
		}
	}
}
