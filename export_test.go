package ctxlock

// UnlockHold exposes lockValue.unlockHold, which Do uses, to the tests.
func UnlockHold(l Lock, expired <-chan struct{}) bool { return l.(*lockValue).unlockHold(expired) }
