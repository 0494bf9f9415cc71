package plugine2e

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/client"
	"github.com/pulse-sched/pulse/worker"
)

func ptr[T any](v T) *T { return &v }

// requireNoRetryQueued checks that asynq holds no further delivery of an
// execution: its task ran to an end.
func requireNoRetryQueued(t *testing.T, e *env, executionID string) {
	t.Helper()
	info, err := e.inspector.GetTaskInfo(worker.QueueDefault, executionID)
	require.NoError(t, err)
	require.Equalf(t, asynq.TaskStateCompleted, info.State, "task %s is %s, last error %q", executionID, info.State, info.LastErr)
}

func TestRetriesAndPermanentFailures(t *testing.T) {
	if testing.Short() {
		t.Skip("runs schedules for about 6 seconds")
	}
	acme := &fakePlugin{}
	addr := acme.serve(t, map[string]client.HandlerFunc{
		// sync.flaky fails its first two calls of each execution.
		"sync.flaky": func(_ context.Context, req *client.Request) error {
			if n := acme.attemptsOf(req.ExecutionID); n <= 2 {
				return fmt.Errorf("upstream answered 503 (call %d)", n)
			}
			return nil
		},
		// sync.strict rejects its schedule's first execution for good.
		"sync.strict": func(_ context.Context, req *client.Request) error {
			if len(acme.of(req.ScheduleID)) == 1 {
				return client.Permanent(errors.New("payload rejected: unknown account"))
			}
			return nil
		},
	})
	e := startEnv(t, envConfig{
		plugins:       []plugin{{atsCode: "acme", endpoint: addr}, {atsCode: "bare"}},
		localHandlers: []string{"local.only"},
	})

	// The strict schedule first: its failed state lasts only until its next
	// slot, two seconds later.
	strict := e.create(t, "acme", client.ScheduleSpec{
		Handler: "sync.strict", Interval: 2 * time.Second, RunImmediately: true, MaxRetries: ptr(3),
	})
	failed := e.waitJob(t, "acme", strict, "fails", func(j *client.Job) bool { return j.GetLastStatus() == "failed" })
	require.Equal(t, "payload rejected: unknown account", failed.GetLastError())
	require.EqualValues(t, 1, failed.GetConsecutiveFailures())
	firstExecution := failed.GetLastExecutionId()

	flaky := e.create(t, "acme", client.ScheduleSpec{
		Handler: "sync.flaky", Interval: 30 * time.Second, RunImmediately: true,
		Payload: []byte("accounts"), MaxRetries: ptr(3),
	})
	// The API accepts local.only for a plugin without an endpoint, but this
	// worker has no such handler: nothing can run it.
	orphan := e.create(t, "bare", client.ScheduleSpec{
		Handler: "local.only", Interval: 30 * time.Second, RunImmediately: true, MaxRetries: ptr(3),
	})

	t.Run("permanent failure, then the next slot", func(t *testing.T) {
		job := e.waitJob(t, "acme", strict, "succeeds at its next slot", func(j *client.Job) bool {
			return j.GetLastStatus() == "succeeded"
		})
		require.NotEqual(t, firstExecution, job.GetLastExecutionId())
		require.Zero(t, job.GetConsecutiveFailures(), "a success resets the failure count")
		require.Empty(t, job.GetLastError())
		require.Equal(t, 1, acme.attemptsOf(firstExecution), "a permanent failure was retried")
		requireNoRetryQueued(t, e, firstExecution)
	})

	t.Run("failing twice, then succeeding", func(t *testing.T) {
		job := e.waitJob(t, "acme", flaky, "succeeds", func(j *client.Job) bool { return j.GetLastStatus() == "succeeded" })
		calls := acme.of(flaky)
		require.Len(t, calls, 3, "attempts of the execution")
		for i, c := range calls {
			require.Equal(t, job.GetLastExecutionId(), c.req.ExecutionID, "attempt %d", i)
			require.Equal(t, i, c.req.Attempt)
			require.Equal(t, calls[0].req.Slot, c.req.Slot, "attempt %d", i)
			require.Equal(t, []byte("accounts"), c.req.Payload)
		}
		// The backoff doubles from 1s; asynq keeps retry times in whole
		// seconds, so each wait may be up to a second shorter.
		require.Greater(t, calls[1].at.Sub(calls[0].at), 0*time.Second)
		require.GreaterOrEqual(t, calls[2].at.Sub(calls[1].at), time.Second, "no backoff before attempt 2")
		require.EqualValues(t, 1, job.GetTotalRuns(), "retries count as runs")
		require.Zero(t, job.GetConsecutiveFailures())
		require.Empty(t, job.GetLastError())
		requireNoRetryQueued(t, e, job.GetLastExecutionId())
	})

	t.Run("no handler and no source_url", func(t *testing.T) {
		job := e.waitJob(t, "bare", orphan, "fails", func(j *client.Job) bool { return j.GetLastStatus() == "failed" })
		require.Contains(t, job.GetLastError(), `no handler named "local.only" is registered in this worker`)
		require.Contains(t, job.GetLastError(), "the schedule has no source_url")
		require.EqualValues(t, 1, job.GetTotalRuns())
		require.EqualValues(t, 1, job.GetConsecutiveFailures())
		requireNoRetryQueued(t, e, job.GetLastExecutionId())
	})
}

func TestPauseAfterFailures(t *testing.T) {
	if testing.Short() {
		t.Skip("runs schedules for about 5 seconds")
	}
	acme := &fakePlugin{}
	addr := acme.serve(t, map[string]client.HandlerFunc{
		"report.broken": func(context.Context, *client.Request) error { return errors.New("database is read-only") },
		"report.hangs":  hang(t),
	})
	e := startEnv(t, envConfig{plugins: []plugin{{atsCode: "acme", endpoint: addr}}})

	broken := e.create(t, "acme", client.ScheduleSpec{
		Handler: "report.broken", Interval: time.Second, RunImmediately: true,
		MaxRetries: ptr(0), PauseAfterFailures: 3,
	})
	hangs := e.create(t, "acme", client.ScheduleSpec{
		Handler: "report.hangs", Interval: time.Second, RunImmediately: true,
		MaxRetries: ptr(0), PauseAfterFailures: 2, Timeout: time.Second,
	})

	job := e.waitJob(t, "acme", broken, "pauses", func(j *client.Job) bool { return j.GetState() == "paused" })
	require.Equal(t, "paused after 3 consecutive failed executions", job.GetPausedReason())
	require.EqualValues(t, 3, job.GetConsecutiveFailures())
	require.EqualValues(t, 3, job.GetTotalRuns())
	require.Equal(t, "failed", job.GetLastStatus())
	require.Equal(t, "database is read-only", job.GetLastError())
	require.Empty(t, job.GetNextRunAt())
	require.Never(t, func() bool { return len(acme.of(broken)) > 3 }, 2500*time.Millisecond, 50*time.Millisecond,
		"the paused schedule still ran")

	// A timed-out attempt counts once, so two hanging executions pause it.
	job = e.waitJob(t, "acme", hangs, "pauses", func(j *client.Job) bool { return j.GetState() == "paused" })
	require.Equal(t, "paused after 2 consecutive failed executions", job.GetPausedReason())
	require.EqualValues(t, 2, job.GetConsecutiveFailures())
	require.EqualValues(t, 2, job.GetTotalRuns())
	require.Contains(t, job.GetLastError(), worker.PluginCallErrorPrefix)
	require.Contains(t, job.GetLastError(), "timed out: no response within the attempt's timeout")
	require.Len(t, acme.of(hangs), 2)
}
