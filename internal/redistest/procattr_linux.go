package redistest

import "syscall"

// procAttr has the kernel kill a server when the test binary dies without
// running its cleanups (a -timeout panic, a SIGKILL), so that no
// redis-server outlives the run.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
