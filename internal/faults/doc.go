// Package faults is Pulse's fault-injection suite. It runs the real pulse
// binary as separate processes against a real redis-server, injects faults
// (killed, stopped and skewed processes, Redis restarts, crashes between
// claim and enqueue, storms of concurrent calls) and checks from the
// workers' per-execution log records that every slot of an active schedule
// ran exactly once, on its grid.
//
// The tests carry the build tag "faults" because they take minutes; run them
// with "make test-faults".
package faults
