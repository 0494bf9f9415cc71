//go:build faults

package faults

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/proto/protocolpb"
)

// TestSlowHandlerOverlap runs a handler that takes 2.5 intervals under each
// overlap policy: skip never runs two executions of a schedule at once and
// counts the skipped slots; buffer_one also never overlaps but runs the slot
// that waited; allow runs them side by side.
func TestSlowHandlerOverlap(t *testing.T) {
	t.Parallel()
	const interval = time.Second
	e := newEnv(t, envOptions{})
	e.scheduler("scheduler-1", nil)
	e.worker("worker-1", nil)
	e.worker("worker-2", nil)

	slow := func(policy string) (string, time.Time) {
		return e.create(&protocolpb.CreateScheduleRequest{
			HandlerName: "pulse.sleep", IntervalSeconds: 1, TimeoutSeconds: 10, OverlapPolicy: policy,
			Metadata: map[string]string{"duration": "2500ms"},
		})
	}
	skip, skipAnchor := slow("")
	buffer, bufferAnchor := slow("buffer_one")
	allow, allowAnchor := slow("allow")

	time.Sleep(12 * time.Second)
	for _, id := range []string{skip, buffer, allow} {
		e.pause(id)
	}
	// Let the executions that run finish, so every run has its end.
	time.Sleep(3 * time.Second)
	runs := e.runs()

	t.Run("skip", func(t *testing.T) {
		requireOncePerSlot(t, skip, runs[skip], skipAnchor, interval)
		requireNoOverlap(t, skip, runs[skip])
		s := e.get(skip)
		require.Positive(t, s.SkippedSlots, "skipped slots")
		// Every slot from the first to the last run is either run or
		// skipped.
		first := firstAttempts(runs[skip])
		total := int64(first[len(first)-1].slot.Sub(first[0].slot)/interval) + 1
		require.LessOrEqual(t, int64(len(first))+s.SkippedSlots, total+3, "runs plus skipped slots exceed the grid")
	})

	t.Run("buffer_one", func(t *testing.T) {
		requireOncePerSlot(t, buffer, runs[buffer], bufferAnchor, interval)
		requireNoOverlap(t, buffer, runs[buffer])
		waited := false
		for _, r := range firstAttempts(runs[buffer]) {
			waited = waited || r.startedAt.Sub(r.slot) > interval
		}
		require.True(t, waited, "no buffered slot ran after waiting for the previous one")
		require.Positive(t, e.get(buffer).SkippedSlots, "slots beyond the buffer are skipped")
	})

	t.Run("allow", func(t *testing.T) {
		requireOncePerSlot(t, allow, runs[allow], allowAnchor, interval)
		overlapping := false
		first := firstAttempts(runs[allow])
		for i := 1; i < len(first); i++ {
			overlapping = overlapping || first[i].startedAt.Before(first[i-1].finishedAt)
		}
		require.True(t, overlapping, "no two executions ran at once under allow")
		require.Zero(t, e.get(allow).SkippedSlots, "allow skipped slots")
	})

	var overlapSkips float64
	for _, w := range e.workers {
		overlapSkips += metricValue(t, w, "pulse_slots_skipped_total", map[string]string{"reason": "overlap"})
	}
	require.Equal(t, float64(e.get(skip).SkippedSlots+e.get(buffer).SkippedSlots), overlapSkips, "overlap skips counted by the workers")
}

// TestNoDrift runs 60 slots of a one-second schedule whose handler takes
// 300ms: every slot runs once, exactly on the grid, never before its time.
func TestNoDrift(t *testing.T) {
	t.Parallel()
	const (
		interval = time.Second
		slots    = 60
	)
	e := newEnv(t, envOptions{})
	e.scheduler("scheduler-1", nil)
	e.worker("worker-1", nil)
	id, anchor := e.create(&protocolpb.CreateScheduleRequest{
		HandlerName: "pulse.sleep", IntervalSeconds: 1, Metadata: map[string]string{"duration": "300ms"},
	})
	last := anchor.Add(slots * interval)
	waitFor(t, slots*interval+20*time.Second, "60 slots", func() bool {
		first := firstAttempts(e.runs()[id])
		return len(first) > 0 && !first[len(first)-1].slot.Before(last)
	})
	e.pause(id)

	runs := e.runs()[id]
	requireOncePerSlot(t, id, runs, anchor, interval)
	requireNoGap(t, id, runs, anchor.Add(interval), last, interval)
	var worst time.Duration
	for _, r := range firstAttempts(runs) {
		require.False(t, r.startedAt.Before(r.slot), "slot %s started early, at %s", r.slot, r.startedAt)
		worst = max(worst, r.startedAt.Sub(r.slot))
	}
	t.Logf("latest start after its slot: %s", worst)
}

// requireNoOverlap fails when two executions of a schedule ran at once.
func requireNoOverlap(t *testing.T, id string, runs []run) {
	t.Helper()
	for i := 1; i < len(runs); i++ {
		prev := runs[i-1]
		require.False(t, prev.finishedAt.IsZero(), "schedule %s: the run of slot %s has no end", id, prev.slot)
		require.False(t, runs[i].startedAt.Before(prev.finishedAt),
			"schedule %s: slot %s started at %s while slot %s ran until %s", id, runs[i].slot, runs[i].startedAt, prev.slot, prev.finishedAt)
	}
}
