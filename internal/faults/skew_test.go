//go:build faults

package faults

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/proto/protocolpb"
)

// TestClockSkew runs schedulers and workers whose clocks are 3 seconds
// ahead or behind. libfaketime cannot shift the clock of a Go program, which
// reads time through the vDSO, so each process shifts its own reads with the
// test-only PULSE_CLOCK_OFFSET. Due decisions use the Redis clock, so no
// slot runs twice, none is skipped and every slot lies on the grid.
func TestClockSkew(t *testing.T) {
	t.Parallel()
	const interval = time.Second
	e := newEnv(t, envOptions{APIEnv: map[string]string{"PULSE_CLOCK_OFFSET": "-3s"}})
	ahead := map[string]string{"PULSE_CLOCK_OFFSET": "3s"}
	behind := map[string]string{"PULSE_CLOCK_OFFSET": "-3s"}
	e.scheduler("scheduler-ahead", ahead)
	e.scheduler("scheduler-behind", behind)
	e.worker("worker-ahead", ahead)
	e.worker("worker-behind", behind)

	anchors := map[string]time.Time{}
	for range 10 {
		id, anchor := e.create(&protocolpb.CreateScheduleRequest{IntervalSeconds: 1})
		anchors[id] = anchor
	}
	time.Sleep(12 * time.Second)
	end := e.redisNow()
	for id := range anchors {
		e.pause(id)
	}

	runs := e.runs()
	for id, anchor := range anchors {
		requireOncePerSlot(t, id, runs[id], anchor, interval)
		requireNoGap(t, id, runs[id], anchor.Add(interval), end.Add(-2*time.Second), interval)
		require.Zero(t, e.get(id).SkippedSlots, "skipped slots of %s", id)
	}
}
