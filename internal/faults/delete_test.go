//go:build faults

package faults

import (
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/proto/protocolpb"
)

// TestDeleteStopsRuns deletes schedules right after a run and 100ms before
// a slot: no execution starts after the delete is acknowledged.
func TestDeleteStopsRuns(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.scheduler("scheduler-1", nil)
	e.worker("worker-1", nil)

	t.Run("right after a run", func(t *testing.T) {
		id, _ := e.create(&protocolpb.CreateScheduleRequest{IntervalSeconds: 1})
		waitFor(t, 10*time.Second, "a run", func() bool { return len(e.runs()[id]) > 0 })
		e.delete(id)
		acknowledged := e.redisNow()

		time.Sleep(3 * time.Second)
		require.Empty(t, runsStartedAfter(e.runs()[id], acknowledged), "a run started after the delete")
		require.Equal(t, "deleted", string(e.get(id).State))
	})

	t.Run("100ms before a slot", func(t *testing.T) {
		id, _ := e.create(&protocolpb.CreateScheduleRequest{IntervalSeconds: 2})
		waitFor(t, 10*time.Second, "a run", func() bool { return len(e.runs()[id]) > 0 })
		next := e.get(id).NextRunAt
		// Redis runs on this host, so its clock and the local one agree.
		time.Sleep(time.Until(next.Add(-100 * time.Millisecond)))
		e.delete(id)
		acknowledged := e.redisNow()

		time.Sleep(3 * time.Second)
		require.Empty(t, runsStartedAfter(e.runs()[id], acknowledged), "a run started after the delete")
		for _, r := range e.runs()[id] {
			require.True(t, r.slot.Before(next), "slot %s, due after the delete, ran", r.slot)
		}
	})
}

// TestDeletePendingTask deletes a schedule whose slot's task waits in the
// queue behind a busy worker: the worker drops the task once it is free.
func TestDeletePendingTask(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.scheduler("scheduler-1", nil)
	e.worker("worker-1", map[string]string{"PULSE_CONCURRENCY": "1"})

	blocker, _ := e.create(&protocolpb.CreateScheduleRequest{
		HandlerName: "pulse.sleep", IntervalSeconds: 60, RunImmediately: true, TimeoutSeconds: 20,
		Metadata: map[string]string{"duration": "6s"},
	})
	waitFor(t, 10*time.Second, "the blocking handler to start", func() bool { return len(e.runs()[blocker]) > 0 })

	id, _ := e.create(&protocolpb.CreateScheduleRequest{IntervalSeconds: 1, RunImmediately: true})
	inspector := asynq.NewInspectorFromRedisClient(e.rdb)
	waitFor(t, 5*time.Second, "the slot's task to wait in the queue", func() bool {
		q, err := inspector.GetQueueInfo("pulse")
		return err == nil && q.Pending > 0
	})
	require.Empty(t, e.runs()[id], "the slot ran although the only worker was busy")
	e.delete(id)
	acknowledged := e.redisNow()

	waitFor(t, 20*time.Second, "the queue to drain", func() bool {
		q, err := inspector.GetQueueInfo("pulse")
		return err == nil && q.Pending == 0 && q.Active == 0
	})
	require.Empty(t, runsStartedAfter(e.runs()[id], acknowledged), "a run started after the delete")
	require.Empty(t, e.runs()[id], "the pending slot ran")
}
