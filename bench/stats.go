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
	for _, c := range clients {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := c.Info(ctx, "cpu").Result()
		cancel()
		if err != nil {
			continue
		}
		for _, line := range strings.Split(s, "\n") {
			name, v, ok := strings.Cut(strings.TrimSpace(line), ":")
			if ok && (name == "used_cpu_sys" || name == "used_cpu_user") {
				f, _ := strconv.ParseFloat(v, 64)
				total += f
			}
		}
	}
	return time.Duration(total * float64(time.Second))
}
