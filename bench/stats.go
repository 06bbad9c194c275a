package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"syscall"
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
	infoFields(clients, "commandstats", func(name, value string) {
		if !strings.HasPrefix(name, "cmdstat_") || name == "cmdstat_info" {
			return
		}
		v, _, _ := strings.Cut(strings.TrimPrefix(value, "calls="), ",")
		n, _ := strconv.ParseInt(v, 10, 64)
		by[strings.TrimPrefix(name, "cmdstat_")] += n
	})
	return by
}

// infoFields calls fn with each "name:value" line of INFO section from
// every server; a server that does not answer in 5s is skipped.
func infoFields(clients []*redis.Client, section string, fn func(name, value string)) {
	for _, c := range clients {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := c.Info(ctx, section).Result()
		cancel()
		if err != nil {
			continue
		}
		for line := range strings.Lines(s) {
			if name, value, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
				fn(name, value)
			}
		}
	}
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

// processCPU is the CPU time (user+sys) this process has used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serverCPU is the CPU time (user+sys, main thread and children) the
// servers report in INFO cpu.
func serverCPU(clients []*redis.Client) time.Duration {
	var total float64
	infoFields(clients, "cpu", func(name, value string) {
		if name == "used_cpu_sys" || name == "used_cpu_user" {
			f, _ := strconv.ParseFloat(value, 64)
			total += f
		}
	})
	return time.Duration(total * float64(time.Second))
}
