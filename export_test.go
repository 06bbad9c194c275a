package ctxlock

// UnlockHold exposes lockValue.unlockHold, which Do uses, to the tests.
func UnlockHold(l Lock, expired <-chan struct{}) bool { return l.(*lockValue).unlockHold(expired) }

// MutexFree reports whether m's mutex is free (nobody holds it).
func MutexFree(m *Manager) bool {
	if m.mu.TryLock() {
		m.mu.Unlock()
		return true
	}
	return false
}

// ForceUnlock unlocks m's mutex, held by a goroutine that will never unlock
// it, so that a failing test can clean up.
func ForceUnlock(m *Manager) { m.mu.Unlock() }

// NoInstrumentation removes m's instrumentation altogether (a nil
// *ctxlockotel.Instrumentation records nothing), for comparing the cost of
// unconfigured instrumentation with none.
func NoInstrumentation(m *Manager) { m.obs = nil }

// PendingReleases is the number of m's releases not yet confirmed.
func PendingReleases(m *Manager) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pending
}
