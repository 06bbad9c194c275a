package etcd

import "time"

// Hedges reports how many hedges b's Extend calls have sent.
func Hedges(b *Backend) int64 { return b.hedges.Load() }

// HedgeDelay is b's hedge delay for an Extend of leases of ttl now.
func HedgeDelay(b *Backend, ttl time.Duration) time.Duration { return b.hedgeDelay(ttl) }
