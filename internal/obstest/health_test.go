package obstest_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/pulse-sched/pulse/api"
	"github.com/pulse-sched/pulse/internal/proctest"
	"github.com/pulse-sched/pulse/internal/redistest"
)

// grpcHealth returns the gRPC health status of service on p.
func grpcHealth(p *proctest.Process, service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	conn, err := grpc.NewClient(p.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	return resp.GetStatus(), err
}

// TestHealthAndReadiness checks /healthz, /readyz and the gRPC health of
// each service of a pulse serve, while Redis runs and after it stopped.
func TestHealthAndReadiness(t *testing.T) {
	if testing.Short() {
		t.Skip("runs pulse serve for about 10s")
	}
	redis := redistest.Start(t)
	srv := startServe(t, redis.URL(), writeRegistry(t), nil)

	status, body := srv.HTTPGet(t, "/healthz")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "ok\n", body)
	status, body = srv.HTTPGet(t, "/readyz")
	require.Equal(t, http.StatusOK, status, body)
	for _, service := range []string{"", api.ServiceName} {
		got, err := grpcHealth(srv, service)
		require.NoError(t, err)
		require.Equalf(t, healthpb.HealthCheckResponse_SERVING, got, "gRPC health of %q", service)
	}

	redis.Stop()
	// The API's health follows Redis within its 5s check interval.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		got, err := grpcHealth(srv, api.ServiceName)
		if assert.NoError(c, err) {
			assert.Equal(c, healthpb.HealthCheckResponse_NOT_SERVING, got)
		}
	}, 15*time.Second, 200*time.Millisecond)
	status, body = srv.HTTPGet(t, "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, status)
	lines := strings.Split(strings.TrimSpace(body), "\n")
	require.Len(t, lines, 2, body)
	require.True(t, strings.HasPrefix(lines[0], "api: "), body)
	require.True(t, strings.HasPrefix(lines[1], "redis: "), body)
	status, _ = srv.HTTPGet(t, "/healthz")
	require.Equal(t, http.StatusOK, status, "the process is still alive")
}

// TestWorkerReadiness checks that a worker is ready once it takes tasks, and
// that a worker's /readyz has no api or scheduler check.
func TestWorkerReadiness(t *testing.T) {
	if testing.Short() {
		t.Skip("runs pulse worker")
	}
	redis := redistest.Start(t)
	worker := proctest.Start(t, proctest.Options{Name: "worker", Args: []string{"worker"}, RedisURL: redis.URL()})
	worker.WaitReady(t, readyTimeout)
	worker.WaitLog(t, readyTimeout, "worker started", proctest.MsgIs("worker started"))

	redis.Stop()
	require.Eventually(t, func() bool {
		status, body, err := monitoringRequest(worker, http.MethodGet, "/readyz", "")
		return err == nil && status.StatusCode == http.StatusServiceUnavailable && strings.HasPrefix(body, "redis: ")
	}, 15*time.Second, 200*time.Millisecond, "/readyz reports Redis")
	_, body := worker.HTTPGet(t, "/readyz")
	require.NotContains(t, body, "api: ")
	require.NotContains(t, body, "scheduler: ")
	require.NotContains(t, body, "worker: ", "the worker still takes tasks, it only waits for Redis")
}
