// Package testproc keeps the external server process of a test server
// (redis-server, postgres, etcd): it starts it, reaps it, signals it, kills
// it and shuts it down, so that no server outlives the test binary and a
// restarted server is a new process under the same Proc.
package testproc

import (
	"errors"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Proc is the latest process started by Start. Its zero value has none.
// Its methods are safe for concurrent use.
type Proc struct {
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed once cmd has been waited for
	stopped bool          // the last signal was SIGSTOP
}

// ErrRunning is returned by Start while the previous process runs.
var ErrRunning = errors.New("testproc: the previous process is still running")

// Start starts cmd (its arguments, directory, output and SysProcAttr set
// by the caller) and reaps it when it exits. On Linux the kernel kills it
// when the test binary dies without running its cleanups (a -timeout
// panic, a SIGKILL). It returns the channel closed when the process exits.
func (p *Proc) Start(cmd *exec.Cmd) (exited <-chan struct{}, err error) {
	if _, _, running := p.Running(); running {
		return nil, ErrRunning
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	setPdeathsig(cmd.SysProcAttr)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(ch)
	}()
	p.mu.Lock()
	p.cmd, p.exited, p.stopped = cmd, ch, false
	p.mu.Unlock()
	return ch, nil
}

// Running returns the process's id and exit channel, and false when no
// process is running (none was started, or it exited).
func (p *Proc) Running() (pid int, exited <-chan struct{}, ok bool) {
	p.mu.Lock()
	cmd, ch := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return 0, nil, false
	}
	select {
	case <-ch:
		return 0, nil, false
	default:
	}
	return cmd.Process.Pid, ch, true
}

// Kill sends SIGKILL (a crash) and waits for the process to exit. It is a
// no-op when none is running.
func (p *Proc) Kill() {
	pid, exited, ok := p.Running()
	if !ok {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	<-exited
}

// Signal sends sig to the process and remembers whether it is frozen
// (SIGSTOP; any other signal thaws it as far as Stopped is concerned). It
// is a no-op, returning nil, when none is running.
func (p *Proc) Signal(sig syscall.Signal) error {
	pid, _, ok := p.Running()
	if !ok {
		return nil
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return err
	}
	p.mu.Lock()
	p.stopped = sig == syscall.SIGSTOP
	p.mu.Unlock()
	return nil
}

// Stopped reports whether the last signal sent was SIGSTOP.
func (p *Proc) Stopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopped
}

// Shutdown thaws the process (SIGCONT), sends sig (the server's own
// graceful stop: SIGTERM, SIGINT) and waits up to d for it to exit, then
// kills it. It is a no-op when none is running.
func (p *Proc) Shutdown(sig syscall.Signal, d time.Duration) {
	pid, exited, ok := p.Running()
	if !ok {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGCONT)
	_ = syscall.Kill(pid, sig)
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-exited:
	case <-timer.C:
		p.Kill()
	}
}
