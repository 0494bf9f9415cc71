package proctest_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/internal/proctest"
	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/proto/protocolpb"
)

// TestWorkerDrainKeepsAttempt stops a worker with SIGTERM while a handler
// runs past the drain timeout, and checks that another worker runs the
// interrupted slot again with the same attempt number.
func TestWorkerDrainKeepsAttempt(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 4 pulse processes and runs for about 10s")
	}

	redis := redistest.Start(t)
	plugins := proctest.WritePlugins(t, "drain")
	options := func(name, role string, env map[string]string) proctest.Options {
		return proctest.Options{
			Name: name, Args: []string{role}, RedisURL: redis.URL(), PluginsFile: plugins.Path, Env: env,
		}
	}
	apiProcess := proctest.Start(t, options("api", "api", nil))
	scheduler := proctest.Start(t, options("scheduler", "scheduler", nil))
	first := proctest.Start(t, options("worker-1", "worker", map[string]string{"PULSE_DRAIN_TIMEOUT": "1s"}))
	for _, p := range []*proctest.Process{apiProcess, scheduler, first} {
		p.WaitReady(t, 30*time.Second)
	}

	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	created, err := apiProcess.Client(t).CreateSchedule(ctx, &protocolpb.CreateScheduleRequest{
		AuthToken:       plugins.Token,
		HandlerName:     "pulse.sleep",
		IntervalSeconds: 600,
		Metadata:        map[string]string{"duration": "4s"},
		RunImmediately:  true,
	})
	require.NoError(t, err)
	require.Truef(t, created.GetSuccess(), "CreateSchedule failed: %s: %s", created.GetErrorCode(), created.GetError())
	id := created.GetScheduleId()

	started := first.WaitLog(t, 10*time.Second, "start of the sleep", startedAfter(id, time.Time{}))
	first.Terminate(t)
	require.Equal(t, 0, first.Wait(t, 15*time.Second), "exit code of the stopped worker")
	interrupted := first.WaitLog(t, time.Second, "end of the interrupted sleep", proctest.MsgIs("execution finished"))
	require.Equal(t, "interrupted", interrupted.String("status"))

	second := proctest.Start(t, options("worker-2", "worker", nil))
	finished := second.WaitLog(t, 20*time.Second, "end of the redelivered sleep", proctest.MsgIs("execution finished"))
	require.Equal(t, "succeeded", finished.String("status"))
	require.Equal(t, started.String("execution_id"), finished.String("execution_id"))
	require.Equal(t, started.String("slot"), finished.String("slot"))

	starts := proctest.ExecutionStarts(t, first, second)
	slot, err := time.Parse(time.RFC3339Nano, started.String("slot"))
	require.NoError(t, err)
	records := starts[proctest.KeyOf(id, slot)]
	require.Len(t, records, 2, "execution records of the slot: %+v", records)
	require.Equal(t, "worker-2", records[1].Process)
	require.Equal(t, 0, records[1].Attempt, "an interrupted attempt must not use up a retry")
}
