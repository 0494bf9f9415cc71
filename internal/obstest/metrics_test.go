package obstest_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/pulse-sched/pulse/internal/proctest"
	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/proto/protocolpb"
)

// unregisteredHandler is a handler name that no worker registers: its
// executions fail at once and are counted as handler "other".
const unregisteredHandler = "obstest.unregistered"

// TestMetricsMatchDocsAndEvents drives schedules of a real pulse serve
// through success, failure, overlap skip, auto-pause, pause, delete, an
// in-band API error and two registry reloads. It then checks that /metrics
// has every metric of docs/metrics.md with its documented type and labels,
// and that the counts match the events in the logs.
func TestMetricsMatchDocsAndEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("runs pulse serve for about 15s")
	}
	redis := redistest.Start(t)
	reg := writeRegistry(t)
	srv := startServe(t, redis.URL(), reg, nil)
	client := srv.Client(t)
	token := reg.PluginToken

	okID := create(t, client, token, &protocolpb.CreateScheduleRequest{
		HandlerName: "pulse.log", IntervalSeconds: 1, RunImmediately: true,
	})
	failID := create(t, client, token, &protocolpb.CreateScheduleRequest{
		HandlerName: unregisteredHandler, IntervalSeconds: 1, RunImmediately: true,
		MaxRetries: proto.Int32(0), PauseAfterFailures: 1,
	})
	// Each run takes 2.5 intervals, so the next two slots find it running.
	sleepID := create(t, client, token, &protocolpb.CreateScheduleRequest{
		HandlerName: "pulse.sleep", IntervalSeconds: 1, RunImmediately: true,
		Metadata: map[string]string{"duration": "2500ms"}, OverlapPolicy: "skip",
		TimeoutSeconds: 10, MaxRetries: proto.Int32(0),
	})
	create(t, client, token, &protocolpb.CreateScheduleRequest{HandlerName: "pulse.log", IntervalSeconds: 3600})
	goneID := create(t, client, token, &protocolpb.CreateScheduleRequest{HandlerName: "pulse.log", IntervalSeconds: 3600})
	remove(t, client, token, goneID)
	getUnknown(t, client, token)

	// Wait for two successes, the failure that auto-pauses, and an overlap.
	require.Eventually(t, func() bool {
		f, err := tryScrape(srv)
		if err != nil {
			return false
		}
		succeeded, _ := value(f, "pulse_worker_executions_total", "handler", "pulse.log", "outcome", "succeeded")
		autoPaused, _ := value(f, "pulse_worker_schedules_auto_paused_total")
		overlaps, _ := value(f, "pulse_slots_skipped_total", "reason", "overlap")
		sleeps, _ := value(f, "pulse_worker_executions_total", "handler", "pulse.sleep", "outcome", "succeeded")
		return succeeded >= 2 && autoPaused == 1 && overlaps >= 1 && sleeps >= 1
	}, 20*time.Second, 200*time.Millisecond, "executions, an auto-pause and an overlap skip")
	pause(t, client, token, okID)
	pause(t, client, token, sleepID)

	reloadRegistry(t, srv, reg)
	waitQuiet(t, srv, redis)

	f := scrape(t, srv)
	t.Run("documented", func(t *testing.T) { checkAgainstDoc(t, f) })
	t.Run("executions", func(t *testing.T) { checkExecutions(t, srv, f, okID, failID, sleepID) })
	t.Run("dispatch", func(t *testing.T) { checkDispatch(t, f) })
	t.Run("api", func(t *testing.T) { checkAPI(t, f) })
	t.Run("state", func(t *testing.T) { checkState(t, srv, f) })
}

// getUnknown requests a schedule that does not exist: an in-band NOT_FOUND.
func getUnknown(t *testing.T, client protocolpb.ScheduleServiceClient, token string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	resp, err := client.GetSchedule(ctx, &protocolpb.GetScheduleRequest{AuthToken: token, ScheduleId: "01J00000000000000000000000"})
	require.NoError(t, err)
	require.Equal(t, "NOT_FOUND", resp.GetErrorCode())
}

// reloadRegistry breaks the plugins file, which the API reloads as it
// changes, sends SIGHUP, which reloads it again, then restores the original
// file, and waits for each result in the metrics.
func reloadRegistry(t *testing.T, srv *proctest.Process, reg registry) {
	t.Helper()
	waitReloads := func(result string, want float64, what string) {
		t.Helper()
		require.Eventually(t, func() bool {
			f, err := tryScrape(srv)
			v, _ := value(f, "pulse_registry_reloads_total", "result", result)
			return err == nil && v == want
		}, 10*time.Second, 100*time.Millisecond, what)
	}
	replaceFile(t, reg.Path, "plugins: [unclosed\n")
	waitReloads("failure", 1, "a failed reload after the change")
	srv.Signal(t, syscall.SIGHUP)
	waitReloads("failure", 2, "a failed reload on SIGHUP")

	before := time.Now()
	replaceFile(t, reg.Path, reg.contents)
	waitReloads("success", 1, "a successful reload after the change")

	f := scrape(t, srv)
	require.Equal(t, 2.0, mustValue(t, f, "pulse_registry_reloads_total", "result", "failure"))
	last := mustValue(t, f, "pulse_registry_last_reload_success_timestamp_seconds")
	require.GreaterOrEqual(t, last, float64(before.Unix()), "last successful reload time")
}

// waitQuiet waits until asynq holds no task that may still run, every
// dispatched slot is accounted for (run, skipped or dropped), and the asynq
// metrics, cached for a few seconds, show it too.
func waitQuiet(t *testing.T, srv *proctest.Process, redis *redistest.Server) {
	t.Helper()
	inspector := asynq.NewInspectorFromRedisClient(redis.Client())
	require.Eventually(t, func() bool {
		q, err := inspector.GetQueueInfo("pulse")
		if err != nil || q.Pending+q.Active+q.Scheduled+q.Retry > 0 {
			return false
		}
		f, err := tryScrape(srv)
		if err != nil {
			return false
		}
		dispatched, _ := value(f, "pulse_scheduler_slots_dispatched_total")
		pending, found := value(f, "asynq_tasks_enqueued_total", "queue", "pulse", "state", "pending")
		processed, _ := value(f, "asynq_tasks_processed_total", "queue", "pulse")
		return dispatched == accountedSlots(f) && found && pending == 0 && processed >= dispatched
	}, 20*time.Second, 200*time.Millisecond, "an empty queue and every dispatched slot accounted for")
}

// accountedSlots is the number of slots that reached a worker: first
// attempts, overlap skips and dropped tasks. No schedule of the test retries.
func accountedSlots(f map[string]*dto.MetricFamily) float64 {
	executions, _ := value(f, "pulse_worker_executions_total")
	overlaps, _ := value(f, "pulse_slots_skipped_total", "reason", "overlap")
	dropped, _ := value(f, "pulse_worker_tasks_dropped_total")
	return executions + overlaps + dropped
}

// countLines counts the log lines with message msg about schedule id.
func countLines(p *proctest.Process, msg, id string) float64 {
	n := 0
	for _, l := range p.Lines() {
		if l.Msg() == msg && l.String("schedule_id") == id {
			n++
		}
	}
	return float64(n)
}

func checkExecutions(t *testing.T, srv *proctest.Process, f map[string]*dto.MetricFamily, okID, failID, sleepID string) {
	logRuns := countLines(srv, "pulse.log handler ran", okID)
	sleepRuns := countLines(srv, "pulse.sleep handler ran", sleepID)
	require.GreaterOrEqual(t, logRuns, 2.0)
	require.Equal(t, logRuns, mustValue(t, f, "pulse_worker_executions_total", "handler", "pulse.log", "outcome", "succeeded"))
	require.Equal(t, sleepRuns, mustValue(t, f, "pulse_worker_executions_total", "handler", "pulse.sleep", "outcome", "succeeded"))
	require.Equal(t, logRuns, mustValue(t, f, "pulse_worker_execution_duration_seconds", "handler", "pulse.log"))
	require.Equal(t, sleepRuns, mustValue(t, f, "pulse_worker_execution_duration_seconds", "handler", "pulse.sleep"))

	// The unregistered handler failed once, then its schedule paused itself.
	require.Equal(t, 1.0, countLines(srv, "execution failed, no attempt left", failID))
	require.Equal(t, 1.0, mustValue(t, f, "pulse_worker_executions_total", "handler", "other", "outcome", "failed"))
	require.Equal(t, 1.0, mustValue(t, f, "pulse_worker_schedules_auto_paused_total"))
	for _, m := range f["pulse_worker_executions_total"].GetMetric() {
		require.False(t, hasLabels(m, []string{"handler", unregisteredHandler}), "an unregistered handler name is a label value")
	}

	overlaps := countLines(srv, "slot skipped: the previous execution is still running", sleepID)
	require.GreaterOrEqual(t, overlaps, 1.0)
	require.Equal(t, overlaps, mustValue(t, f, "pulse_slots_skipped_total", "reason", "overlap"))

	executions, _ := value(f, "pulse_worker_executions_total")
	require.Equal(t, logRuns+sleepRuns+1, executions, "every execution has a known outcome")
	require.Equal(t, executions, mustValue(t, f, "pulse_worker_start_lateness_seconds"), "one start lateness per first attempt")
}

func checkDispatch(t *testing.T, f map[string]*dto.MetricFamily) {
	dispatched := mustValue(t, f, "pulse_scheduler_slots_dispatched_total")
	require.Equal(t, dispatched, accountedSlots(f))
	require.Equal(t, dispatched, mustValue(t, f, "pulse_scheduler_dispatch_lateness_seconds"), "one dispatch lateness per slot")
	require.Equal(t, 0.0, mustValue(t, f, "pulse_slots_skipped_total", "reason", "misfire"))
	require.Equal(t, 0.0, mustValue(t, f, "pulse_scheduler_slots_reclaimed_total"))
	require.Equal(t, 16.0, mustValue(t, f, "pulse_scheduler_partitions_owned"), "every partition of the default 16")
	require.GreaterOrEqual(t, mustValue(t, f, "asynq_tasks_processed_total", "queue", "pulse"), dispatched)
	require.Equal(t, 0.0, mustValue(t, f, "asynq_tasks_enqueued_total", "queue", "pulse", "state", "pending"))
	require.Equal(t, 0.0, mustValue(t, f, "pulse_redis_errors_total"), "no Redis error in any component")
}

func checkAPI(t *testing.T, f map[string]*dto.MetricFamily) {
	require.Equal(t, 5.0, mustValue(t, f, "pulse_api_requests_total", "method", "CreateSchedule", "code", "OK"))
	require.Equal(t, 2.0, mustValue(t, f, "pulse_api_requests_total", "method", "PauseSchedule", "code", "OK"))
	require.Equal(t, 1.0, mustValue(t, f, "pulse_api_requests_total", "method", "DeleteSchedule", "code", "OK"))
	require.Equal(t, 1.0, mustValue(t, f, "pulse_api_requests_total", "method", "GetSchedule", "code", "NOT_FOUND"))

	service := []string{"grpc_service", "protocol.ScheduleService"}
	created := append([]string{"grpc_method", "CreateSchedule", "grpc_code", "OK"}, service...)
	require.Equal(t, 5.0, mustValue(t, f, "grpc_server_handled_total", created...))
	// An in-band error is a successful call for gRPC.
	got := append([]string{"grpc_method", "GetSchedule", "grpc_code", "OK"}, service...)
	require.Equal(t, 1.0, mustValue(t, f, "grpc_server_handled_total", got...))
	require.Equal(t, 5.0, mustValue(t, f, "grpc_server_handling_seconds", append([]string{"grpc_method", "CreateSchedule"}, service...)...))
}

// checkState checks the gauges that read Redis: one active schedule, three
// paused (two by the API, one by itself) and one deleted. They are cached
// for a few seconds, so the test waits for them.
func checkState(t *testing.T, srv *proctest.Process, f map[string]*dto.MetricFamily) {
	require.Equal(t, 0.0, mustValue(t, f, "pulse_schedules_overdue"))
	want := map[string]float64{"active": 1, "paused": 3, "deleted": 1}
	require.Eventually(t, func() bool {
		f, err := tryScrape(srv)
		if err != nil {
			return false
		}
		for state, n := range want {
			if v, _ := value(f, "pulse_schedules", "state", state); v != n {
				return false
			}
		}
		return true
	}, 15*time.Second, 200*time.Millisecond, "pulse_schedules %v", want)
}
