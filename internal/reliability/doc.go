// Package reliability holds the fault scenarios of ctxlock as named tests:
// holder crash (Liveness A), blackholed connection (Liveness B), a frozen
// server, Unlock during an outage (Atomicity B), a server restart with
// waiters, a seeded chaos run, and bad input for every public entry point.
//
// The package has no API: everything is in its _test.go files. The tests
// start their own redis-server processes (internal/redistest) and cut their
// connections with internal/faultproxy. See RELIABILITY.md at the module root
// for what each scenario proves and how to run the long chaos run:
//
//	go test ./internal/reliability -run TestChaos -chaos.duration=10m -v
package reliability
