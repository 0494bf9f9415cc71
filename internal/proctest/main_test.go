package proctest_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/api"
	"github.com/pulse-sched/pulse/internal/proctest"
	"github.com/pulse-sched/pulse/proto/protocolpb"
)

func TestMain(m *testing.M) {
	os.Exit(proctest.Main(m))
}

// rpcTimeout bounds each call that a test expects to succeed.
const rpcTimeout = 5 * time.Second

// createSchedule creates a pulse.log schedule and returns its ID and its
// created_at, the anchor of its slot grid.
func createSchedule(t *testing.T, client protocolpb.ScheduleServiceClient, token string, intervalSeconds int32) (string, time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	created, err := client.CreateSchedule(ctx, &protocolpb.CreateScheduleRequest{
		AuthToken:       token,
		HandlerName:     "pulse.log",
		IntervalSeconds: intervalSeconds,
	})
	require.NoError(t, err)
	require.Truef(t, created.GetSuccess(), "CreateSchedule failed: %s: %s", created.GetErrorCode(), created.GetError())

	job := getSchedule(t, client, token, created.GetScheduleId())
	createdAt, err := time.Parse(api.TimeFormat, job.GetCreatedAt())
	require.NoError(t, err)
	return created.GetScheduleId(), createdAt
}

func getSchedule(t *testing.T, client protocolpb.ScheduleServiceClient, token, id string) *protocolpb.ScheduledJob {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	got, err := client.GetSchedule(ctx, &protocolpb.GetScheduleRequest{AuthToken: token, ScheduleId: id})
	require.NoError(t, err)
	require.Truef(t, got.GetSuccess(), "GetSchedule %s failed: %s: %s", id, got.GetErrorCode(), got.GetError())
	return got.GetJob()
}

func pauseSchedule(t *testing.T, client protocolpb.ScheduleServiceClient, token, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	paused, err := client.PauseSchedule(ctx, &protocolpb.PauseScheduleRequest{AuthToken: token, ScheduleId: id})
	require.NoError(t, err)
	require.Truef(t, paused.GetSuccess(), "PauseSchedule %s failed: %s: %s", id, paused.GetErrorCode(), paused.GetError())
}

// poll calls cond every 100ms until it returns true or timeout passes, and
// reports whether it returned true.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}
