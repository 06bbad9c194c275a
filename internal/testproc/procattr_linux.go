package testproc

import "syscall"

// setPdeathsig has the kernel kill the server when the test binary dies
// without running its cleanups (a -timeout panic, a SIGKILL).
func setPdeathsig(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
