package api

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/pulse-sched/pulse/internal/metrics"
	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/proto/protocolpb"
	"github.com/pulse-sched/pulse/store"
)

// startAtIn formats the time d from now as a start_at: RFC 3339 in UTC with
// milliseconds.
func startAtIn(d time.Duration) string {
	return time.Now().Add(d).UTC().Truncate(time.Millisecond).Format(TimeFormat)
}

func TestCreateOptionsRejected(t *testing.T) {
	rdb := redistest.Start(t).Client()
	svc, _ := newTestService(t, rdb)

	cases := []struct {
		name   string
		change func(*protocolpb.CreateScheduleRequest)
		// want lists parts of the message: the field and the rule.
		want []string
	}{
		{"misfire policy unknown", func(r *protocolpb.CreateScheduleRequest) { r.MisfirePolicy = "sometimes" },
			[]string{`misfire_policy "sometimes"`, "run_latest, skip or run_all"}},
		{"misfire policy wrong case", func(r *protocolpb.CreateScheduleRequest) { r.MisfirePolicy = "RUN_ALL" },
			[]string{`misfire_policy "RUN_ALL"`, "run_latest, skip or run_all"}},
		{"misfire window without policy", func(r *protocolpb.CreateScheduleRequest) { r.MisfireWindowSeconds = 600 },
			[]string{"misfire_window_seconds 600", "only to misfire_policy run_all"}},
		{"misfire window with skip", func(r *protocolpb.CreateScheduleRequest) {
			r.MisfirePolicy = "skip"
			r.MisfireWindowSeconds = 600
		}, []string{"misfire_window_seconds 600", "only to misfire_policy run_all"}},
		{"misfire window with run_latest", func(r *protocolpb.CreateScheduleRequest) {
			r.MisfirePolicy = "run_latest"
			r.MisfireWindowSeconds = 600
		}, []string{"misfire_window_seconds 600", "only to misfire_policy run_all"}},
		{"misfire window negative", func(r *protocolpb.CreateScheduleRequest) {
			r.MisfirePolicy = "run_all"
			r.MisfireWindowSeconds = -1
		}, []string{"misfire_window_seconds -1", "between 1 and 86400"}},
		{"misfire window above one day", func(r *protocolpb.CreateScheduleRequest) {
			r.MisfirePolicy = "run_all"
			r.MisfireWindowSeconds = 86401
		}, []string{"misfire_window_seconds 86401", "between 1 and 86400"}},
		{"overlap policy unknown", func(r *protocolpb.CreateScheduleRequest) { r.OverlapPolicy = "queue" },
			[]string{`overlap_policy "queue"`, "skip, allow or buffer_one"}},
		{"overlap policy long value cut", func(r *protocolpb.CreateScheduleRequest) { r.OverlapPolicy = strings.Repeat("q", 1000) },
			[]string{`overlap_policy "` + strings.Repeat("q", 64) + `..."`, "skip, allow or buffer_one"}},
		{"timeout negative", func(r *protocolpb.CreateScheduleRequest) { r.TimeoutSeconds = -1 },
			[]string{"timeout_seconds -1", "between 1 and 86400"}},
		{"timeout above one day", func(r *protocolpb.CreateScheduleRequest) { r.TimeoutSeconds = MaxTimeoutSeconds + 1 },
			[]string{"timeout_seconds 86401", "between 1 and 86400"}},
		{"max retries negative", func(r *protocolpb.CreateScheduleRequest) { r.MaxRetries = proto.Int32(-1) },
			[]string{"max_retries -1", "between 0 and 25"}},
		{"max retries above limit", func(r *protocolpb.CreateScheduleRequest) { r.MaxRetries = proto.Int32(MaxRetries + 1) },
			[]string{"max_retries 26", "between 0 and 25"}},
		{"pause after failures negative", func(r *protocolpb.CreateScheduleRequest) { r.PauseAfterFailures = -1 },
			[]string{"pause_after_failures -1", "between 0 (never) and 1000"}},
		{"pause after failures above limit", func(r *protocolpb.CreateScheduleRequest) { r.PauseAfterFailures = MaxPauseAfterFailures + 1 },
			[]string{"pause_after_failures 1001", "between 0 (never) and 1000"}},
		{"start_at malformed", func(r *protocolpb.CreateScheduleRequest) { r.StartAt = "tomorrow" },
			[]string{`start_at "tomorrow"`, "RFC 3339"}},
		{"start_at without zone", func(r *protocolpb.CreateScheduleRequest) { r.StartAt = "2030-01-02T15:04:05" },
			[]string{`start_at "2030-01-02T15:04:05"`, "RFC 3339"}},
		{"start_at in the past", func(r *protocolpb.CreateScheduleRequest) { r.StartAt = startAtIn(-time.Hour) },
			[]string{"start_at", "in the past"}},
		{"start_at above one year ahead", func(r *protocolpb.CreateScheduleRequest) { r.StartAt = startAtIn(MaxStartAtAhead + time.Hour) },
			[]string{"start_at", "at most one year ahead"}},
		{"start_at with run_immediately", func(r *protocolpb.CreateScheduleRequest) {
			r.StartAt = startAtIn(time.Hour)
			r.RunImmediately = true
		}, []string{"start_at and run_immediately", "set only one"}},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := dataset(t, rdb)
			req := validCreateRequest()
			tc.change(req)

			resp, err := svc.CreateSchedule(testContext(t), req)

			require.NoError(t, err, "a request error must be returned in-band")
			require.False(t, resp.GetSuccess(), "success")
			require.Empty(t, resp.GetScheduleId(), "schedule ID")
			require.Equal(t, string(CodeInvalidArgument), resp.GetErrorCode(), "error code")
			for _, part := range tc.want {
				require.Contains(t, resp.GetError(), part, "error message")
			}
			if diff := cmp.Diff(before, dataset(t, rdb)); diff != "" {
				t.Errorf("Redis changed (-before +after):\n%s", diff)
			}
		})
	}
}

func TestCreateOptionsAccepted(t *testing.T) {
	rdb := redistest.Start(t).Client()
	svc, _ := newTestService(t, rdb)

	create := func(t *testing.T, change func(*protocolpb.CreateScheduleRequest)) *protocolpb.ScheduledJob {
		t.Helper()
		req := validCreateRequest()
		change(req)
		return getJob(t, svc, alphaToken, createSchedule(t, svc, req))
	}

	t.Run("every option read back", func(t *testing.T) {
		startAt := startAtIn(2 * time.Hour)
		job := create(t, func(r *protocolpb.CreateScheduleRequest) {
			r.MisfirePolicy = "run_all"
			r.MisfireWindowSeconds = 600
			r.OverlapPolicy = "buffer_one"
			r.TimeoutSeconds = 90
			r.MaxRetries = proto.Int32(7)
			r.PauseAfterFailures = 4
			r.StartAt = startAt
		})

		require.Equal(t, "run_all", job.GetMisfirePolicy(), "misfire_policy")
		require.Equal(t, int32(600), job.GetMisfireWindowSeconds(), "misfire_window_seconds")
		require.Equal(t, "buffer_one", job.GetOverlapPolicy(), "overlap_policy")
		require.Equal(t, int32(90), job.GetTimeoutSeconds(), "timeout_seconds")
		require.Equal(t, int32(7), job.GetMaxRetries(), "max_retries")
		require.Equal(t, int32(4), job.GetPauseAfterFailures(), "pause_after_failures")
		require.Equal(t, startAt, job.GetNextRunAt(), "next_run_at")
	})

	t.Run("defaults when absent", func(t *testing.T) {
		job := create(t, func(*protocolpb.CreateScheduleRequest) {})

		require.Equal(t, "run_latest", job.GetMisfirePolicy(), "misfire_policy")
		require.Zero(t, job.GetMisfireWindowSeconds(), "misfire_window_seconds")
		require.Equal(t, "skip", job.GetOverlapPolicy(), "overlap_policy")
		require.Equal(t, int32(30), job.GetTimeoutSeconds(), "timeout_seconds")
		require.Equal(t, int32(MaxRetryDefault), job.GetMaxRetries(), "max_retries")
		require.Zero(t, job.GetPauseAfterFailures(), "pause_after_failures")
		require.Zero(t, job.GetConsecutiveFailures(), "consecutive_failures")
		require.Zero(t, job.GetTotalRuns(), "total_runs")
		require.Zero(t, job.GetSkippedSlots(), "skipped_slots")
		require.Empty(t, job.GetLastStatus(), "last_status")
		require.Empty(t, job.GetLastError(), "last_error")
		require.Empty(t, job.GetPausedReason(), "paused_reason")
	})

	t.Run("run_all default window", func(t *testing.T) {
		job := create(t, func(r *protocolpb.CreateScheduleRequest) { r.MisfirePolicy = "run_all" })

		require.Equal(t, int32(3600), job.GetMisfireWindowSeconds())
	})

	t.Run("misfire window zero with skip", func(t *testing.T) {
		job := create(t, func(r *protocolpb.CreateScheduleRequest) { r.MisfirePolicy = "skip" })

		require.Equal(t, "skip", job.GetMisfirePolicy(), "misfire_policy")
		require.Zero(t, job.GetMisfireWindowSeconds(), "misfire_window_seconds")
	})

	t.Run("misfire window of one day", func(t *testing.T) {
		job := create(t, func(r *protocolpb.CreateScheduleRequest) {
			r.MisfirePolicy = "run_all"
			r.MisfireWindowSeconds = 86400
		})

		require.Equal(t, int32(86400), job.GetMisfireWindowSeconds())
	})

	t.Run("timeout of one day", func(t *testing.T) {
		job := create(t, func(r *protocolpb.CreateScheduleRequest) { r.TimeoutSeconds = MaxTimeoutSeconds })

		require.Equal(t, int32(MaxTimeoutSeconds), job.GetTimeoutSeconds())
	})

	t.Run("max retries zero", func(t *testing.T) {
		job := create(t, func(r *protocolpb.CreateScheduleRequest) { r.MaxRetries = proto.Int32(0) })

		require.Zero(t, job.GetMaxRetries())
	})

	t.Run("max retries at limit", func(t *testing.T) {
		job := create(t, func(r *protocolpb.CreateScheduleRequest) { r.MaxRetries = proto.Int32(MaxRetries) })

		require.Equal(t, int32(MaxRetries), job.GetMaxRetries())
	})

	t.Run("pause after failures at limit", func(t *testing.T) {
		job := create(t, func(r *protocolpb.CreateScheduleRequest) { r.PauseAfterFailures = MaxPauseAfterFailures })

		require.Equal(t, int32(MaxPauseAfterFailures), job.GetPauseAfterFailures())
	})

	t.Run("start_at slightly past", func(t *testing.T) {
		job := create(t, func(r *protocolpb.CreateScheduleRequest) { r.StartAt = startAtIn(-2 * time.Second) })

		// A start_at that has passed by the Redis clock means now.
		require.Equal(t, job.GetCreatedAt(), job.GetNextRunAt())
	})

	t.Run("start_at with offset", func(t *testing.T) {
		at := time.Now().Add(3 * time.Hour).Truncate(time.Millisecond)
		job := create(t, func(r *protocolpb.CreateScheduleRequest) {
			r.StartAt = at.In(time.FixedZone("UTC+2", 2*60*60)).Format(time.RFC3339Nano)
		})

		require.Equal(t, at.UTC().Format(TimeFormat), job.GetNextRunAt())
	})

	t.Run("start_at nearly one year ahead", func(t *testing.T) {
		startAt := startAtIn(MaxStartAtAhead - time.Hour)
		job := create(t, func(r *protocolpb.CreateScheduleRequest) { r.StartAt = startAt })

		require.Equal(t, startAt, job.GetNextRunAt())
	})
}

func TestServiceDefaultOptions(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))

	rejected := []struct {
		name string
		cfg  Config
		want string
	}{
		{"default timeout below one second", Config{DefaultTimeout: 500 * time.Millisecond}, "default timeout 500ms is out of range"},
		{"default timeout negative", Config{DefaultTimeout: -time.Second}, "default timeout -1s is out of range"},
		{"default timeout above one day", Config{DefaultTimeout: 24*time.Hour + time.Second}, "between 1s and 24h"},
		{"default max retry above limit", Config{DefaultMaxRetry: MaxRetries + 1}, "default max retry 26 is too high"},
	}
	for _, tc := range rejected {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewService(nil, NewRegistry(), tc.cfg, logger, metrics.NewUnregistered())
			require.ErrorContains(t, err, tc.want)
		})
	}

	rdb := redistest.Start(t).Client()
	accepted := []struct {
		name       string
		cfg        Config
		timeout    int32
		maxRetries int32
	}{
		{"configured defaults stored", Config{DefaultTimeout: 45 * time.Second, DefaultMaxRetry: 9}, 45, 9},
		{"negative max retry means none", Config{DefaultMaxRetry: -1}, 30, 0},
		{"defaults at their limits", Config{DefaultTimeout: 24 * time.Hour, DefaultMaxRetry: MaxRetries}, MaxTimeoutSeconds, MaxRetries},
	}
	for _, tc := range accepted {
		t.Run(tc.name, func(t *testing.T) {
			st, err := store.New(rdb, store.Config{Prefix: "defaults" + strings.ReplaceAll(tc.name, " ", "-"), Partitions: 4})
			require.NoError(t, err)
			require.NoError(t, st.Init(testContext(t)))
			svc, err := NewService(st, newTestRegistry(t), tc.cfg, logger, metrics.NewUnregistered())
			require.NoError(t, err)

			job := getJob(t, svc, alphaToken, createSchedule(t, svc, validCreateRequest()))

			require.Equal(t, tc.timeout, job.GetTimeoutSeconds(), "timeout_seconds")
			require.Equal(t, tc.maxRetries, job.GetMaxRetries(), "max_retries")
		})
	}
}

func TestGetScheduleRecords(t *testing.T) {
	rdb := redistest.Start(t).Client()
	svc, st := newTestService(t, rdb)

	t.Run("corrupt spec is DATA_LOSS", func(t *testing.T) {
		id := createSchedule(t, svc, validCreateRequest())
		p := st.Keys().PartitionOf(id)
		require.NoError(t, rdb.Set(testContext(t), st.Keys().SpecKey(p, id), "garbage", 0).Err())

		_, err := svc.GetSchedule(testContext(t), &protocolpb.GetScheduleRequest{AuthToken: alphaToken, ScheduleId: id})

		require.Equal(t, codes.DataLoss, status.Code(err), "status %v", err)
	})

	t.Run("outcome fields reported", func(t *testing.T) {
		req := validCreateRequest()
		req.PauseAfterFailures = 1
		id := createSchedule(t, svc, req)
		sched, err := st.GetSchedule(testContext(t), id, "")
		require.NoError(t, err)
		ref := store.SlotRef{ScheduleID: id, Slot: sched.NextRunAt, Generation: sched.Generation}
		e, v, err := st.StartExecution(testContext(t), store.StartRequest{Slot: ref, RunningLease: time.Minute})
		require.NoError(t, err)
		require.Equal(t, store.VerdictRun, v)
		_, err = st.FinishExecution(testContext(t), store.FinishRequest{Execution: e, Status: store.StatusFailed, Error: "boom"})
		require.NoError(t, err)

		job := getJob(t, svc, alphaToken, id)

		require.Equal(t, "failed", job.GetLastStatus(), "last_status")
		require.Equal(t, "boom", job.GetLastError(), "last_error")
		require.Equal(t, int64(1), job.GetConsecutiveFailures(), "consecutive_failures")
		require.Equal(t, int64(1), job.GetTotalRuns(), "total_runs")
		require.Equal(t, "paused", job.GetState(), "state")
		require.Equal(t, "paused after 1 consecutive failed executions", job.GetPausedReason(), "paused_reason")
		require.Equal(t, e.ID, job.GetLastExecutionId(), "last_execution_id")
	})

	t.Run("long multi-byte error sendable", func(t *testing.T) {
		id := createSchedule(t, svc, validCreateRequest())
		sched, err := st.GetSchedule(testContext(t), id, "")
		require.NoError(t, err)
		ref := store.SlotRef{ScheduleID: id, Slot: sched.NextRunAt, Generation: sched.Generation}
		e, _, err := st.StartExecution(testContext(t), store.StartRequest{Slot: ref, RunningLease: time.Minute})
		require.NoError(t, err)
		_, err = st.FinishExecution(testContext(t), store.FinishRequest{
			Execution: e, Status: store.StatusFailed, Error: strings.Repeat("€", store.ErrorMaxBytes),
		})
		require.NoError(t, err)

		resp, err := svc.GetSchedule(testContext(t), &protocolpb.GetScheduleRequest{AuthToken: alphaToken, ScheduleId: id})

		requireOK(t, resp, err)
		require.True(t, utf8.ValidString(resp.GetJob().GetLastError()), "last_error is not valid UTF-8")
		_, err = proto.Marshal(resp)
		require.NoError(t, err, "the response must be sendable over gRPC")
	})
}
