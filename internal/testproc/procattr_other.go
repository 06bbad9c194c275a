//go:build !linux

package testproc

import "syscall"

// setPdeathsig: only Linux can tie a server's life to the test binary's.
func setPdeathsig(*syscall.SysProcAttr) {}
