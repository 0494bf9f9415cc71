package api

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/proto/protocolpb"
)

// TestServiceRejects checks every in-band error: the response carries
// success=false, the exact error_code and a message that names the field
// and the rule, and Redis is left exactly as it was.
func TestServiceRejects(t *testing.T) {
	rdb := redistest.Start(t).Client()
	svc, _ := newTestService(t, rdb)

	alphaID := createSchedule(t, svc, validCreateRequest())
	deletedID := createSchedule(t, svc, validCreateRequest())
	resp, err := svc.DeleteSchedule(testContext(t), &protocolpb.DeleteScheduleRequest{AuthToken: alphaToken, ScheduleId: deletedID})
	requireOK(t, resp, err)
	unknownID := ulid.Make().String()

	create := func(change func(*protocolpb.CreateScheduleRequest)) func(context.Context) (inBandResponse, error) {
		return func(ctx context.Context) (inBandResponse, error) {
			req := validCreateRequest()
			change(req)
			return svc.CreateSchedule(ctx, req)
		}
	}
	pause := func(token, id string) func(context.Context) (inBandResponse, error) {
		return func(ctx context.Context) (inBandResponse, error) {
			return svc.PauseSchedule(ctx, &protocolpb.PauseScheduleRequest{AuthToken: token, ScheduleId: id})
		}
	}
	resume := func(token, id string) func(context.Context) (inBandResponse, error) {
		return func(ctx context.Context) (inBandResponse, error) {
			return svc.ResumeSchedule(ctx, &protocolpb.ResumeScheduleRequest{AuthToken: token, ScheduleId: id})
		}
	}
	remove := func(token, id string) func(context.Context) (inBandResponse, error) {
		return func(ctx context.Context) (inBandResponse, error) {
			return svc.DeleteSchedule(ctx, &protocolpb.DeleteScheduleRequest{AuthToken: token, ScheduleId: id})
		}
	}
	get := func(token, id string) func(context.Context) (inBandResponse, error) {
		return func(ctx context.Context) (inBandResponse, error) {
			return svc.GetSchedule(ctx, &protocolpb.GetScheduleRequest{AuthToken: token, ScheduleId: id})
		}
	}

	manyEntries := map[string]string{}
	for i := 0; i <= MaxMetadataEntriesDefault; i++ {
		manyEntries[fmt.Sprintf("key%02d", i)] = "v"
	}
	notFound := fmt.Sprintf("schedule %s not found", alphaID)

	cases := []struct {
		name string
		call func(context.Context) (inBandResponse, error)
		code ErrorCode
		// want lists parts of the message: the field and the rule.
		want []string
	}{
		{"interval zero", create(func(r *protocolpb.CreateScheduleRequest) { r.IntervalSeconds = 0 }),
			CodeInvalidArgument, []string{"interval_seconds 0 ", "at least 1"}},
		{"interval negative", create(func(r *protocolpb.CreateScheduleRequest) { r.IntervalSeconds = -60 }),
			CodeInvalidArgument, []string{"interval_seconds -60 ", "at least 1"}},
		{"interval above one year", create(func(r *protocolpb.CreateScheduleRequest) { r.IntervalSeconds = MaxIntervalSeconds + 1 }),
			CodeInvalidArgument, []string{"interval_seconds 31536001 ", "at most 31536000"}},
		{"handler name empty", create(func(r *protocolpb.CreateScheduleRequest) { r.HandlerName = "" }),
			CodeInvalidArgument, []string{"handler_name", "missing"}},
		{"handler name with space", create(func(r *protocolpb.CreateScheduleRequest) { r.HandlerName = "daily report" }),
			CodeInvalidArgument, []string{`handler_name "daily report"`, "letters, digits"}},
		{"handler name leading digit", create(func(r *protocolpb.CreateScheduleRequest) { r.HandlerName = "1report" }),
			CodeInvalidArgument, []string{`handler_name "1report"`, "starting with a letter"}},
		{"handler name trailing newline", create(func(r *protocolpb.CreateScheduleRequest) { r.HandlerName = "report\n" }),
			CodeInvalidArgument, []string{`handler_name "report\n"`, "letters, digits"}},
		{"handler name invalid UTF-8", create(func(r *protocolpb.CreateScheduleRequest) { r.HandlerName = "report\xff" }),
			CodeInvalidArgument, []string{`handler_name "report\xff"`, "letters, digits"}},
		{"handler name too long", create(func(r *protocolpb.CreateScheduleRequest) { r.HandlerName = strings.Repeat("h", MaxHandlerNameLength+1) }),
			CodeInvalidArgument, []string{"handler_name", "1 to 128"}},
		{"payload above limit", create(func(r *protocolpb.CreateScheduleRequest) { r.Payload = make([]byte, MaxPayloadBytesDefault+1) }),
			CodeInvalidArgument, []string{"payload is 1048577 bytes", "limit of 1048576 bytes"}},
		{"metadata too many entries", create(func(r *protocolpb.CreateScheduleRequest) { r.Metadata = manyEntries }),
			CodeInvalidArgument, []string{"metadata has 33 entries", "limit of 32"}},
		{"metadata key too long", create(func(r *protocolpb.CreateScheduleRequest) {
			r.Metadata = map[string]string{strings.Repeat("k", MaxMetadataKeyBytesDefault+1): "v"}
		}), CodeInvalidArgument, []string{"metadata key", "65 bytes", "limit of 64"}},
		{"metadata key bad character", create(func(r *protocolpb.CreateScheduleRequest) { r.Metadata = map[string]string{"team name": "v"} }),
			CodeInvalidArgument, []string{`metadata key "team name"`, "only letters, digits"}},
		{"metadata key invalid UTF-8", create(func(r *protocolpb.CreateScheduleRequest) { r.Metadata = map[string]string{"team\xff": "v"} }),
			CodeInvalidArgument, []string{`metadata key "team\xff"`, "only letters, digits"}},
		{"metadata key empty", create(func(r *protocolpb.CreateScheduleRequest) { r.Metadata = map[string]string{"": "v"} }),
			CodeInvalidArgument, []string{"metadata key", "empty"}},
		{"metadata value too long", create(func(r *protocolpb.CreateScheduleRequest) {
			r.Metadata = map[string]string{"team": strings.Repeat("v", MaxMetadataValueBytesDefault+1)}
		}), CodeInvalidArgument, []string{`metadata value of key "team"`, "1025 bytes", "limit of 1024"}},
		{"metadata value invalid UTF-8", create(func(r *protocolpb.CreateScheduleRequest) { r.Metadata = map[string]string{"team": "bill\xffing"} }),
			CodeInvalidArgument, []string{`metadata value of key "team"`, "not valid UTF-8"}},
		{"create token missing", create(func(r *protocolpb.CreateScheduleRequest) { r.AuthToken = "" }),
			CodeUnauthenticated, []string{"auth_token", "missing"}},
		{"create token unknown", create(func(r *protocolpb.CreateScheduleRequest) { r.AuthToken = "no-such-token" }),
			CodeUnauthenticated, []string{"auth_token", "not valid"}},
		{"create for other plugin", create(func(r *protocolpb.CreateScheduleRequest) { r.AtsCode = "beta" }),
			CodePermissionDenied, []string{`ats_code "beta"`, "only for itself"}},
		{"create for other plugin cut multibyte", create(func(r *protocolpb.CreateScheduleRequest) { r.AtsCode = "a" + strings.Repeat("é", 40) }),
			CodePermissionDenied, []string{"ats_code", "only for itself"}},
		{"admin create without ats_code", create(func(r *protocolpb.CreateScheduleRequest) { r.AuthToken = adminToken }),
			CodeInvalidArgument, []string{"ats_code", "missing"}},
		{"admin create for unknown plugin", create(func(r *protocolpb.CreateScheduleRequest) {
			r.AuthToken = adminToken
			r.AtsCode = "gamma"
		}), CodeInvalidArgument, []string{`ats_code "gamma"`, "not a plugin of the registry"}},

		{"pause token missing", pause("", alphaID), CodeUnauthenticated, []string{"auth_token", "missing"}},
		{"resume token unknown", resume("no-such-token", alphaID), CodeUnauthenticated, []string{"auth_token", "not valid"}},
		{"delete token missing", remove("", alphaID), CodeUnauthenticated, []string{"auth_token", "missing"}},
		{"get token unknown", get("no-such-token", alphaID), CodeUnauthenticated, []string{"auth_token", "not valid"}},

		{"pause other plugin's schedule", pause(betaToken, alphaID), CodeNotFound, []string{notFound}},
		{"resume other plugin's schedule", resume(betaToken, alphaID), CodeNotFound, []string{notFound}},
		{"delete other plugin's schedule", remove(betaToken, alphaID), CodeNotFound, []string{notFound}},
		{"get other plugin's schedule", get(betaToken, alphaID), CodeNotFound, []string{notFound}},

		{"pause unknown ID", pause(alphaToken, unknownID), CodeNotFound, []string{fmt.Sprintf("schedule %s not found", unknownID)}},
		{"resume unknown ID", resume(alphaToken, unknownID), CodeNotFound, []string{fmt.Sprintf("schedule %s not found", unknownID)}},
		{"delete unknown ID", remove(adminToken, unknownID), CodeNotFound, []string{fmt.Sprintf("schedule %s not found", unknownID)}},
		{"get unknown ID", get(adminToken, unknownID), CodeNotFound, []string{fmt.Sprintf("schedule %s not found", unknownID)}},

		{"pause malformed ID", pause(alphaToken, "not-a-ulid"), CodeInvalidArgument, []string{`schedule_id "not-a-ulid"`, "26-character ULID"}},
		{"resume malformed ID", resume(alphaToken, alphaID[:25]), CodeInvalidArgument, []string{"schedule_id", "26-character ULID"}},
		{"delete malformed ID", remove(alphaToken, "8ZZZZZZZZZZZZZZZZZZZZZZZZZ"), CodeInvalidArgument, []string{"schedule_id", "26-character ULID"}},
		{"get malformed ID", get(alphaToken, alphaID[:25]+"U"), CodeInvalidArgument, []string{"schedule_id", "26-character ULID"}},
		{"get ID missing", get(alphaToken, ""), CodeInvalidArgument, []string{"schedule_id", "missing"}},

		{"pause deleted", pause(alphaToken, deletedID), CodeFailedPrecondition,
			[]string{fmt.Sprintf("schedule %s is deleted", deletedID), "cannot be paused or resumed"}},
		{"resume deleted", resume(alphaToken, deletedID), CodeFailedPrecondition,
			[]string{fmt.Sprintf("schedule %s is deleted", deletedID), "cannot be paused or resumed"}},
		{"admin pause deleted", pause(adminToken, deletedID), CodeFailedPrecondition,
			[]string{fmt.Sprintf("schedule %s is deleted", deletedID)}},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sizeBefore := dbSize(t, rdb)
			before := dataset(t, rdb)

			resp, err := tc.call(testContext(t))

			require.NoError(t, err, "a request error must be returned in-band")
			require.False(t, resp.GetSuccess())
			require.Equal(t, string(tc.code), resp.GetErrorCode())
			for _, part := range tc.want {
				require.Contains(t, resp.GetError(), part)
			}
			if tc.code == CodeNotFound {
				require.Equal(t, tc.want[0], resp.GetError(), "a NOT_FOUND message must not tell other plugins' schedules apart")
			}
			_, err = proto.Marshal(resp.(proto.Message))
			require.NoError(t, err, "the response must be sendable over gRPC")
			require.Equal(t, sizeBefore, dbSize(t, rdb), "number of keys changed")
			if diff := cmp.Diff(before, dataset(t, rdb)); diff != "" {
				t.Errorf("Redis changed (-before +after):\n%s", diff)
			}
		})
	}
}

func TestCreateRejectsNothingStored(t *testing.T) {
	rdb := redistest.Start(t).Client()
	svc, _ := newTestService(t, rdb)
	before := dbSize(t, rdb)

	req := validCreateRequest()
	req.IntervalSeconds = 0
	resp, err := svc.CreateSchedule(testContext(t), req)
	require.NoError(t, err)
	require.False(t, resp.GetSuccess())
	require.Empty(t, resp.GetScheduleId(), "a rejected create must not return an ID")
	require.Equal(t, before, dbSize(t, rdb))
}
