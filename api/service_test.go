package api

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/proto/protocolpb"
	"github.com/pulse-sched/pulse/store"
)

// parseAPITime parses an API timestamp and checks that it is RFC 3339 in UTC.
func parseAPITime(t *testing.T, field, s string) time.Time {
	t.Helper()
	require.True(t, strings.HasSuffix(s, "Z"), "%s %q does not end in Z", field, s)
	ts, err := time.Parse(time.RFC3339Nano, s)
	require.NoError(t, err, "%s %q is not RFC 3339", field, s)
	return ts
}

func TestServiceLifecycle(t *testing.T) {
	rdb := redistest.Start(t).Client()
	svc, st := newTestService(t, rdb)
	ctx := testContext(t)

	req := validCreateRequest()
	req.HandlerName = "billing.invoice:send-reminders_v2"
	req.IntervalSeconds = 90
	req.Payload = []byte{0x00, 0xff, 0x7f, '\n'}
	req.Metadata = map[string]string{"zone": "eu-west", "a/b": "x", "team": "billing & <ops>", "empty": ""}
	id := createSchedule(t, svc, req)

	t.Run("ID is a ULID", func(t *testing.T) {
		_, err := ulid.ParseStrict(id)
		require.NoError(t, err)
	})

	t.Run("get returns every field", func(t *testing.T) {
		job := getJob(t, svc, alphaToken, id)
		created := parseAPITime(t, "created_at", job.GetCreatedAt())

		want := &protocolpb.ScheduledJob{
			Id:              id,
			AtsCode:         "alpha",
			HandlerName:     req.HandlerName,
			Payload:         req.Payload,
			SourceUrl:       alphaEndpoint,
			IntervalSeconds: 90,
			NextRunAt:       created.Add(90 * time.Second).Format(TimeFormat),
			State:           "active",
			Metadata:        job.GetMetadata(),
			CreatedAt:       job.GetCreatedAt(),
			UpdatedAt:       job.GetCreatedAt(),
			MisfirePolicy:   "run_latest",
			OverlapPolicy:   "skip",
			TimeoutSeconds:  30,
			MaxRetries:      3,
		}
		if diff := cmp.Diff(want, job, protocmp.Transform()); diff != "" {
			t.Errorf("job differs (-want +got):\n%s", diff)
		}
		require.Empty(t, job.GetLastRunAt())
		require.Empty(t, job.GetLastExecutionId())
		require.WithinDuration(t, time.Now(), created, time.Minute)
	})

	t.Run("metadata is JSON with sorted keys", func(t *testing.T) {
		job := getJob(t, svc, alphaToken, id)

		var got map[string]string
		require.NoError(t, json.Unmarshal([]byte(job.GetMetadata()), &got))
		require.Equal(t, req.Metadata, got)

		var order []string
		dec := json.NewDecoder(strings.NewReader(job.GetMetadata()))
		_, err := dec.Token()
		require.NoError(t, err)
		for dec.More() {
			key, err := dec.Token()
			require.NoError(t, err)
			order = append(order, key.(string))
			_, err = dec.Token()
			require.NoError(t, err)
		}
		require.Equal(t, []string{"a/b", "empty", "team", "zone"}, order)
	})

	t.Run("pause", func(t *testing.T) {
		resp, err := svc.PauseSchedule(ctx, &protocolpb.PauseScheduleRequest{AuthToken: alphaToken, ScheduleId: id})
		requireOK(t, resp, err)

		job := getJob(t, svc, alphaToken, id)
		require.Equal(t, "paused", job.GetState())
		require.Empty(t, job.GetNextRunAt())
		updated := parseAPITime(t, "updated_at", job.GetUpdatedAt())
		created := parseAPITime(t, "created_at", job.GetCreatedAt())
		require.False(t, updated.Before(created), "updated %s before created %s", updated, created)
	})

	t.Run("pause again", func(t *testing.T) {
		resp, err := svc.PauseSchedule(ctx, &protocolpb.PauseScheduleRequest{AuthToken: alphaToken, ScheduleId: id})
		requireOK(t, resp, err)
		require.Equal(t, "paused", getJob(t, svc, alphaToken, id).GetState())
	})

	t.Run("resume", func(t *testing.T) {
		resp, err := svc.ResumeSchedule(ctx, &protocolpb.ResumeScheduleRequest{AuthToken: alphaToken, ScheduleId: id})
		requireOK(t, resp, err)

		job := getJob(t, svc, alphaToken, id)
		require.Equal(t, "active", job.GetState())
		next := parseAPITime(t, "next_run_at", job.GetNextRunAt())
		created := parseAPITime(t, "created_at", job.GetCreatedAt())
		updated := parseAPITime(t, "updated_at", job.GetUpdatedAt())
		require.Zero(t, next.Sub(created)%(90*time.Second), "next run %s is off the grid of %s", next, created)
		require.True(t, next.After(updated), "next run %s is not after the resume at %s", next, updated)
	})

	t.Run("resume again", func(t *testing.T) {
		before := getJob(t, svc, alphaToken, id)
		resp, err := svc.ResumeSchedule(ctx, &protocolpb.ResumeScheduleRequest{AuthToken: alphaToken, ScheduleId: id})
		requireOK(t, resp, err)

		after := getJob(t, svc, alphaToken, id)
		require.Equal(t, before.GetNextRunAt(), after.GetNextRunAt())
		require.Equal(t, before.GetUpdatedAt(), after.GetUpdatedAt())
	})

	t.Run("last run reported", func(t *testing.T) {
		s, err := st.GetSchedule(ctx, id, "")
		require.NoError(t, err)
		ref := store.SlotRef{ScheduleID: id, Slot: s.NextRunAt, Generation: s.Generation}
		_, verdict, err := st.StartExecution(ctx, store.StartRequest{Slot: ref, RunningLease: time.Minute})
		require.NoError(t, err)
		require.Equal(t, store.VerdictRun, verdict)

		job := getJob(t, svc, alphaToken, id)
		lastRun := parseAPITime(t, "last_run_at", job.GetLastRunAt())
		require.True(t, lastRun.Equal(s.NextRunAt), "last run %s, slot %s", lastRun, s.NextRunAt)
		require.Equal(t, ref.ExecutionID(), job.GetLastExecutionId())
	})

	t.Run("delete", func(t *testing.T) {
		resp, err := svc.DeleteSchedule(ctx, &protocolpb.DeleteScheduleRequest{AuthToken: alphaToken, ScheduleId: id})
		requireOK(t, resp, err)
	})

	t.Run("deleted readable", func(t *testing.T) {
		job := getJob(t, svc, alphaToken, id)
		require.Equal(t, "deleted", job.GetState())
		require.Empty(t, job.GetNextRunAt())
		require.Equal(t, req.HandlerName, job.GetHandlerName())
		require.Equal(t, req.Payload, job.GetPayload())
		for field, value := range map[string]string{
			"created_at":  job.GetCreatedAt(),
			"updated_at":  job.GetUpdatedAt(),
			"last_run_at": job.GetLastRunAt(),
		} {
			parseAPITime(t, field, value)
		}
	})

	t.Run("delete again", func(t *testing.T) {
		resp, err := svc.DeleteSchedule(ctx, &protocolpb.DeleteScheduleRequest{AuthToken: alphaToken, ScheduleId: id})
		requireOK(t, resp, err)
		require.Equal(t, "deleted", getJob(t, svc, alphaToken, id).GetState())
	})
}

func TestServiceCreate(t *testing.T) {
	rdb := redistest.Start(t).Client()
	svc, _ := newTestService(t, rdb)

	t.Run("run immediately", func(t *testing.T) {
		req := validCreateRequest()
		req.RunImmediately = true
		job := getJob(t, svc, alphaToken, createSchedule(t, svc, req))
		require.Equal(t, job.GetCreatedAt(), job.GetNextRunAt())
	})

	t.Run("first run one interval later", func(t *testing.T) {
		job := getJob(t, svc, alphaToken, createSchedule(t, svc, validCreateRequest()))
		created := parseAPITime(t, "created_at", job.GetCreatedAt())
		next := parseAPITime(t, "next_run_at", job.GetNextRunAt())
		require.Equal(t, time.Hour, next.Sub(created))
	})

	t.Run("own ats_code accepted", func(t *testing.T) {
		req := validCreateRequest()
		req.AtsCode = "alpha"
		job := getJob(t, svc, alphaToken, createSchedule(t, svc, req))
		require.Equal(t, "alpha", job.GetAtsCode())
	})

	t.Run("no metadata stored as empty object", func(t *testing.T) {
		req := validCreateRequest()
		req.Metadata = nil
		req.Payload = nil
		job := getJob(t, svc, alphaToken, createSchedule(t, svc, req))
		require.Equal(t, "{}", job.GetMetadata())
		require.Empty(t, job.GetPayload())
	})

	t.Run("admin creates for plugin", func(t *testing.T) {
		req := validCreateRequest()
		req.AuthToken = adminToken
		req.AtsCode = "beta"
		id := createSchedule(t, svc, req)

		job := getJob(t, svc, betaToken, id)
		require.Equal(t, "beta", job.GetAtsCode())
		require.Equal(t, betaEndpoint, job.GetSourceUrl())
	})

	limits := []struct {
		name   string
		change func(*protocolpb.CreateScheduleRequest)
	}{
		{"interval one second", func(r *protocolpb.CreateScheduleRequest) { r.IntervalSeconds = 1 }},
		{"interval one year", func(r *protocolpb.CreateScheduleRequest) { r.IntervalSeconds = MaxIntervalSeconds }},
		{"handler name at limit", func(r *protocolpb.CreateScheduleRequest) { r.HandlerName = strings.Repeat("h", MaxHandlerNameLength) }},
		{"payload at limit", func(r *protocolpb.CreateScheduleRequest) { r.Payload = make([]byte, MaxPayloadBytesDefault) }},
		{"metadata entries at limit", func(r *protocolpb.CreateScheduleRequest) {
			r.Metadata = map[string]string{}
			for i := 0; i < MaxMetadataEntriesDefault; i++ {
				r.Metadata[fmt.Sprintf("key%02d", i)] = "v"
			}
		}},
		{"metadata key at limit", func(r *protocolpb.CreateScheduleRequest) {
			r.Metadata = map[string]string{strings.Repeat("k", MaxMetadataKeyBytesDefault): "v"}
		}},
		{"metadata value at limit", func(r *protocolpb.CreateScheduleRequest) {
			r.Metadata = map[string]string{"team": strings.Repeat("v", MaxMetadataValueBytesDefault)}
		}},
	}
	for _, tc := range limits {
		t.Run(tc.name, func(t *testing.T) {
			req := validCreateRequest()
			tc.change(req)
			job := getJob(t, svc, alphaToken, createSchedule(t, svc, req))
			require.Equal(t, req.GetIntervalSeconds(), job.GetIntervalSeconds())
			require.Equal(t, req.GetHandlerName(), job.GetHandlerName())
			require.Len(t, job.GetPayload(), len(req.GetPayload()))
		})
	}
}

func TestServiceAdminAccess(t *testing.T) {
	rdb := redistest.Start(t).Client()
	svc, _ := newTestService(t, rdb)
	ctx := testContext(t)
	id := createSchedule(t, svc, validCreateRequest())

	t.Run("get", func(t *testing.T) {
		job := getJob(t, svc, adminToken, id)
		require.Equal(t, "alpha", job.GetAtsCode())
	})

	t.Run("pause", func(t *testing.T) {
		resp, err := svc.PauseSchedule(ctx, &protocolpb.PauseScheduleRequest{AuthToken: adminToken, ScheduleId: id})
		requireOK(t, resp, err)
		require.Equal(t, "paused", getJob(t, svc, alphaToken, id).GetState())
	})

	t.Run("resume", func(t *testing.T) {
		resp, err := svc.ResumeSchedule(ctx, &protocolpb.ResumeScheduleRequest{AuthToken: adminToken, ScheduleId: id})
		requireOK(t, resp, err)
		require.Equal(t, "active", getJob(t, svc, alphaToken, id).GetState())
	})

	t.Run("delete", func(t *testing.T) {
		resp, err := svc.DeleteSchedule(ctx, &protocolpb.DeleteScheduleRequest{AuthToken: adminToken, ScheduleId: id})
		requireOK(t, resp, err)
		require.Equal(t, "deleted", getJob(t, svc, adminToken, id).GetState())
	})
}

func TestServiceLowercaseID(t *testing.T) {
	rdb := redistest.Start(t).Client()
	svc, _ := newTestService(t, rdb)
	id := createSchedule(t, svc, validCreateRequest())

	job := getJob(t, svc, alphaToken, strings.ToLower(id))
	require.Equal(t, id, job.GetId())

	resp, err := svc.PauseSchedule(testContext(t), &protocolpb.PauseScheduleRequest{AuthToken: alphaToken, ScheduleId: strings.ToLower(id)})
	requireOK(t, resp, err)
	require.Equal(t, "paused", getJob(t, svc, alphaToken, id).GetState())
}
