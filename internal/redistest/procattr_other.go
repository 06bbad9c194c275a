//go:build !linux

package redistest

import "syscall"

// procAttr: only Linux can tie a server's life to the test binary's.
func procAttr() *syscall.SysProcAttr { return nil }
