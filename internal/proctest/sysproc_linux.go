package proctest

import "syscall"

// sysProcAttr makes the kernel kill the process when the test binary dies, so
// that no process outlives a test binary that crashed or timed out.
//
// NOTE: Linux sends the signal when the thread that started the process
// exits, not the whole test binary. The Go runtime ends a thread only when a
// goroutine locked to it returns without unlocking, which proctest's callers
// do not do.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
