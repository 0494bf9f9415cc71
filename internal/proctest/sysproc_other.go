//go:build !linux

package proctest

import "syscall"

// sysProcAttr returns nil: without Linux's parent-death signal, a process
// outlives a test binary that crashed, but t.Cleanup still kills it when a
// test ends normally or fails.
func sysProcAttr() *syscall.SysProcAttr {
	return nil
}
