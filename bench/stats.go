package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// serverCalls sums INFO commandstats calls over every server, without INFO
// itself. Redis counts commands run inside Lua scripts too.
func serverCalls(clients []*redis.Client) int64 {
	var total int64
	for _, n := range serverCallsBy(clients) {
		total += n
	}
	return total
}

// serverCallsBy is serverCalls per command name.
func serverCallsBy(clients []*redis.Client) map[string]int64 {
	by := map[string]int64{}
	for _, c := range clients {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := c.Info(ctx, "commandstats").Result()
		cancel()
		if err != nil {
			continue
		}
		for _, line := range strings.Split(s, "\n") {
			line = strings.TrimSpace(line)
			name, rest, ok := strings.Cut(line, ":")
			if !ok || !strings.HasPrefix(name, "cmdstat_") || name == "cmdstat_info" {
				continue
			}
			v, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
			n, _ := strconv.ParseInt(v, 10, 64)
			by[strings.TrimPrefix(name, "cmdstat_")] += n
		}
	}
	return by
}

// diffCalls formats after-before per command, per unit (e.g. per acquisition).
func diffCalls(before, after map[string]int64, per int64) string {
	var parts []string
	for k, v := range after {
		if d := v - before[k]; d > 0 && per > 0 {
			parts = append(parts, fmt.Sprintf("%s=%.2f", k, float64(d)/float64(per)))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func contextBG() context.Context { return context.Background() }
