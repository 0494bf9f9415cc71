package api

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/internal/metrics"
	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/proto/protocolpb"
	"github.com/pulse-sched/pulse/store"
)

// requestCount returns the value of the Requests counter of method and code.
func requestCount(t *testing.T, m *metrics.Metrics, method, code string) float64 {
	t.Helper()
	var out dto.Metric
	require.NoError(t, m.Requests.WithLabelValues(method, code).Write(&out))
	return out.GetCounter().GetValue()
}

func TestServiceRequestMetrics(t *testing.T) {
	srv := redistest.Start(t)
	st, err := store.New(productionClient(t, srv.URL()), store.Config{Prefix: "metricstest", Partitions: 4})
	require.NoError(t, err)
	require.NoError(t, st.Init(testContext(t)))
	m := metrics.NewUnregistered()
	svc, err := NewService(st, newTestRegistry(t), Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)), m)
	require.NoError(t, err)
	ctx := testContext(t)

	id := createSchedule(t, svc, validCreateRequest())
	require.Equal(t, 1.0, requestCount(t, m, "CreateSchedule", metrics.CodeOK))

	_, err = svc.GetSchedule(ctx, &protocolpb.GetScheduleRequest{AuthToken: betaToken, ScheduleId: id})
	require.NoError(t, err)
	require.Equal(t, 1.0, requestCount(t, m, "GetSchedule", string(CodeNotFound)))

	_, err = svc.PauseSchedule(ctx, &protocolpb.PauseScheduleRequest{AuthToken: "", ScheduleId: id})
	require.NoError(t, err)
	require.Equal(t, 1.0, requestCount(t, m, "PauseSchedule", string(CodeUnauthenticated)))

	srv.Stop()
	callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = svc.DeleteSchedule(callCtx, &protocolpb.DeleteScheduleRequest{AuthToken: alphaToken, ScheduleId: ulid.Make().String()})
	require.Error(t, err)
	require.Equal(t, 1.0, requestCount(t, m, "DeleteSchedule", metrics.CodeUnavailable))

	var redisErrors dto.Metric
	require.NoError(t, m.RedisErrors.WithLabelValues("api").Write(&redisErrors))
	require.Equal(t, 1.0, redisErrors.GetCounter().GetValue())
}
