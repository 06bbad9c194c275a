package testproc

import (
	"errors"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func TestLifecycle(t *testing.T) {
	var p Proc
	if _, _, ok := p.Running(); ok {
		t.Fatal("zero Proc reports a running process")
	}
	p.Kill() // no-op
	exited, err := p.Start(exec.Command("sleep", "60"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Start(exec.Command("sleep", "60")); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Start while running: %v; want ErrRunning", err)
	}
	if err := p.Signal(syscall.SIGSTOP); err != nil || !p.Stopped() {
		t.Fatalf("SIGSTOP: %v, stopped %v", err, p.Stopped())
	}
	if err := p.Signal(syscall.SIGCONT); err != nil || p.Stopped() {
		t.Fatalf("SIGCONT: %v, stopped %v", err, p.Stopped())
	}
	p.Kill()
	select {
	case <-exited:
	default:
		t.Fatal("Kill returned before the process exited")
	}
	// A restart is a new process under the same Proc; a process that
	// ignores the graceful signal is killed after the bound.
	if _, err := p.Start(exec.Command("sh", "-c", "trap '' TERM; exec sleep 60")); err != nil {
		t.Fatal(err)
	}
	pid, _, ok := p.Running()
	if !ok {
		t.Fatal("restarted process not running")
	}
	_ = p.Signal(syscall.SIGSTOP) // Shutdown thaws it first
	p.Shutdown(syscall.SIGTERM, 200*time.Millisecond)
	if _, _, ok := p.Running(); ok || syscall.Kill(pid, 0) == nil {
		t.Fatal("process survived Shutdown")
	}
}
