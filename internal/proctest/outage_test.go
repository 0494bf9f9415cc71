package proctest_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pulse-sched/pulse/internal/proctest"
	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/proto/protocolpb"
)

// TestServeRedisOutage stops Redis under a running "pulse serve", checks
// that the process stays up and fails calls fast, then starts Redis again
// and checks that schedules and calls work without restarting pulse.
func TestServeRedisOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts pulse serve and stops Redis for about 10s")
	}
	const (
		callDeadline = 3 * time.Second
		// callSlack is how long after its deadline a call may return.
		callSlack = time.Second
		// outage is how long the process must survive without Redis.
		outage = 5 * time.Second
	)

	redis := redistest.StartWithOptions(t, redistest.Options{AppendOnly: true})
	plugins := proctest.WritePlugins(t, "outage")
	serve := proctest.Start(t, proctest.Options{
		Name: "serve", Args: []string{"serve"}, RedisURL: redis.URL(), PluginsFile: plugins.Path,
	})
	serve.WaitReady(t, 30*time.Second)
	client := serve.Client(t)

	id, _ := createSchedule(t, client, plugins.Token, 1)
	serve.WaitLog(t, 10*time.Second, "execution of the new schedule", startedAfter(id, time.Time{}))

	redis.Stop()

	calls := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"GetSchedule", func(ctx context.Context) error {
			_, err := client.GetSchedule(ctx, &protocolpb.GetScheduleRequest{AuthToken: plugins.Token, ScheduleId: id})
			return err
		}},
		{"CreateSchedule", func(ctx context.Context) error {
			_, err := client.CreateSchedule(ctx, &protocolpb.CreateScheduleRequest{
				AuthToken: plugins.Token, HandlerName: "pulse.log", IntervalSeconds: 1,
			})
			return err
		}},
		{"PauseSchedule", func(ctx context.Context) error {
			_, err := client.PauseSchedule(ctx, &protocolpb.PauseScheduleRequest{AuthToken: plugins.Token, ScheduleId: id})
			return err
		}},
	}
	for _, c := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
		began := time.Now()
		err := c.call(ctx)
		took := time.Since(began)
		cancel()

		t.Logf("%s without Redis returned after %s: %v", c.name, took.Round(time.Millisecond), err)
		require.Containsf(t, []codes.Code{codes.Unavailable, codes.DeadlineExceeded}, status.Code(err),
			"%s without Redis returned %v", c.name, err)
		require.Lessf(t, took, callDeadline+callSlack, "%s without Redis took %s", c.name, took)
	}

	code, body := serve.HTTPGet(t, "/readyz")
	require.Equalf(t, http.StatusServiceUnavailable, code, "/readyz without Redis returned %d: %s", code, body)
	code, body = serve.HTTPGet(t, "/healthz")
	require.Equalf(t, http.StatusOK, code, "/healthz without Redis returned %d: %s", code, body)

	// The process must stay up without Redis for a while; nothing to wait for.
	select {
	case <-serve.Done():
		t.Fatalf("pulse serve exited %s after Redis stopped, exit code %d", outage, serve.ExitCode(t))
	case <-time.After(outage):
	}
	code, body = serve.HTTPGet(t, "/readyz")
	require.Equalf(t, http.StatusServiceUnavailable, code, "/readyz %s into the outage returned %d: %s", outage, code, body)

	var lastSlot time.Time
	for _, l := range serve.Lines() {
		if l.Msg() == "execution started" && l.String("schedule_id") == id {
			slot, err := time.Parse(time.RFC3339Nano, l.String("slot"))
			require.NoError(t, err)
			lastSlot = slot
		}
	}

	redis.Restart()

	serve.WaitLog(t, 20*time.Second, "execution after Redis came back", startedAfter(id, lastSlot))
	serve.WaitReady(t, 10*time.Second)

	job := getSchedule(t, client, plugins.Token, id)
	require.Equal(t, "active", job.GetState(), "the pause without Redis must not have taken effect")
	newID, _ := createSchedule(t, client, plugins.Token, 1)
	require.NotEmpty(t, newID)
	pauseSchedule(t, client, plugins.Token, id)
	job = getSchedule(t, client, plugins.Token, id)
	require.Equal(t, "paused", job.GetState())

	var notJSON []string
	for _, l := range serve.Lines() {
		if l.Stream == "stderr" && l.Fields == nil {
			notJSON = append(notJSON, l.Text)
		}
	}
	require.Empty(t, notJSON, "log lines that are not JSON with PULSE_LOG_FORMAT=json")
}

// startedAfter matches the "execution started" records of schedule id whose
// slot is after slot.
func startedAfter(id string, slot time.Time) func(proctest.Line) bool {
	return func(l proctest.Line) bool {
		if l.Msg() != "execution started" || l.String("schedule_id") != id {
			return false
		}
		got, err := time.Parse(time.RFC3339Nano, l.String("slot"))
		return err == nil && got.After(slot)
	}
}
