package etcd_test

import (
	"strings"
	"testing"
	"time"

	"github.com/ctxlock/ctxlock/backends/etcd"
)

// watchInForce reports whether b's Health answers and reports no watch
// condition: the prefix watch is (re)established.
func watchInForce(t *testing.T, b *etcd.Backend) bool {
	conds, err := b.Health(testCtx(t, 5*time.Second))
	if err != nil {
		return false
	}
	for _, c := range conds {
		if strings.Contains(c, "watch") {
			return false
		}
	}
	return true
}
