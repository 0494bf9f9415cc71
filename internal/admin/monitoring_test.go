package admin

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/internal/redisconn"
)

const (
	adminToken  = "admin-secret"
	pluginToken = "plugin-secret"
)

func authorize(token string) Access {
	switch token {
	case adminToken:
		return AccessGranted
	case pluginToken:
		return AccessDenied
	default:
		return AccessNone
	}
}

// newRedis returns a client of an in-memory Redis with one pending task in
// the queue "pulse", and the task's ID.
func newRedis(t *testing.T) (redis.UniversalClient, string) {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })

	client := asynq.NewClientFromRedisClient(rdb)
	info, err := client.EnqueueContext(context.Background(), asynq.NewTask("pulse:slot", []byte(`{}`)), asynq.Queue("pulse"))
	require.NoError(t, err)
	return rdb, info.ID
}

// newMonitoringServer serves NewMonitoring under the admin handler.
func newMonitoringServer(t *testing.T, rdb redis.UniversalClient, writable bool) *httptest.Server {
	t.Helper()
	h := NewHandler(prometheus.NewRegistry())
	h.Handle(MonitoringPath+"/", NewMonitoring(MonitoringOptions{
		Redis: rdb, Authorize: authorize, Writable: writable,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

type request struct {
	method, path string
	bearer       string
	basicUser    string
	basicPass    string
}

func do(t *testing.T, srv *httptest.Server, r request) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(r.method, srv.URL+r.path, nil)
	require.NoError(t, err)
	if r.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+r.bearer)
	}
	if r.basicPass != "" {
		req.SetBasicAuth(r.basicUser, r.basicPass)
	}
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(body)
}

func TestMonitoringAuthentication(t *testing.T) {
	rdb, _ := newRedis(t)
	srv := newMonitoringServer(t, rdb, false)

	cases := []struct {
		name string
		req  request
		want int
	}{
		{"no token", request{}, http.StatusUnauthorized},
		{"unknown bearer", request{bearer: "nope"}, http.StatusUnauthorized},
		{"unknown basic", request{basicUser: "sre", basicPass: "nope"}, http.StatusUnauthorized},
		{"plugin bearer", request{bearer: pluginToken}, http.StatusForbidden},
		{"admin bearer", request{bearer: adminToken}, http.StatusOK},
		{"admin basic", request{basicUser: "sre", basicPass: adminToken}, http.StatusOK},
		{"admin basic without user", request{basicPass: adminToken}, http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.method, tc.req.path = http.MethodGet, MonitoringPath+"/"
			resp, body := do(t, srv, tc.req)
			require.Equal(t, tc.want, resp.StatusCode, body)
			require.NotEmpty(t, resp.Header.Get("Content-Security-Policy"))
			if tc.want == http.StatusUnauthorized {
				require.Contains(t, resp.Header.Get("WWW-Authenticate"), "Basic")
			}
			if tc.want == http.StatusOK {
				require.Contains(t, body, "<title>Asynq - Monitoring</title>")
				require.Contains(t, body, `<script src="/monitoring/static/js/`)
				require.Contains(t, body, `window.FLAG_READ_ONLY="true"`)
			}
		})
	}

	// The token is also required for the console's API and assets.
	resp, _ := do(t, srv, request{method: http.MethodGet, path: MonitoringPath + "/api/queues"})
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

func TestMonitoringServesQueues(t *testing.T) {
	rdb, _ := newRedis(t)
	srv := newMonitoringServer(t, rdb, false)

	resp, body := do(t, srv, request{method: http.MethodGet, path: MonitoringPath + "/api/queues", bearer: adminToken})
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	var queues struct {
		Queues []struct {
			Queue   string `json:"queue"`
			Size    int    `json:"size"`
			Pending int    `json:"pending"`
		} `json:"queues"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &queues))
	require.Len(t, queues.Queues, 1)
	require.Equal(t, "pulse", queues.Queues[0].Queue)
	require.Equal(t, 1, queues.Queues[0].Pending)
}

// pendingCount returns the pending tasks of the queue "pulse".
func pendingCount(t *testing.T, rdb redis.UniversalClient) int {
	t.Helper()
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo("pulse")
	require.NoError(t, err)
	return info.Pending
}

func TestMonitoringReadOnlyRejectsChanges(t *testing.T) {
	rdb, taskID := newRedis(t)
	srv := newMonitoringServer(t, rdb, false)

	for _, r := range []request{
		{method: http.MethodDelete, path: "/api/queues/pulse/pending_tasks/" + taskID},
		{method: http.MethodPost, path: "/api/queues/pulse/pending_tasks/" + taskID + ":archive"},
		{method: http.MethodPost, path: "/api/queues/pulse:pause"},
		{method: http.MethodDelete, path: "/api/queues/pulse"},
		{method: http.MethodPut, path: "/"},
	} {
		r.path = MonitoringPath + r.path
		r.bearer = adminToken
		resp, body := do(t, srv, r)
		require.Equalf(t, http.StatusMethodNotAllowed, resp.StatusCode, "%s %s: %s", r.method, r.path, body)
		require.Contains(t, body, "read-only")
	}
	require.Equal(t, 1, pendingCount(t, rdb), "the task is still pending")

	// Without a token, a change gets 401 before the method is looked at.
	resp, _ := do(t, srv, request{method: http.MethodDelete, path: MonitoringPath + "/api/queues/pulse/pending_tasks/" + taskID})
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

// TestAsynqmonReadOnlyRejectsChanges checks asynqmon's own read-only mode,
// without Pulse's guard in front: its API refuses a delete.
func TestAsynqmonReadOnlyRejectsChanges(t *testing.T) {
	rdb, taskID := newRedis(t)
	console := asynqmon.New(asynqmon.Options{
		RootPath: MonitoringPath, RedisConnOpt: redisconn.Shared{Client: rdb}, ReadOnly: true,
	})
	srv := httptest.NewServer(console)
	t.Cleanup(srv.Close)

	resp, body := do(t, srv, request{method: http.MethodDelete, path: MonitoringPath + "/api/queues/pulse/pending_tasks/" + taskID})
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, body)
	require.Equal(t, 1, pendingCount(t, rdb))
}

func TestMonitoringWritableAllowsChanges(t *testing.T) {
	rdb, taskID := newRedis(t)
	srv := newMonitoringServer(t, rdb, true)

	resp, body := do(t, srv, request{method: http.MethodDelete, path: MonitoringPath + "/api/queues/pulse/pending_tasks/" + taskID, bearer: adminToken})
	require.Equal(t, http.StatusNoContent, resp.StatusCode, body)
	require.Equal(t, 0, pendingCount(t, rdb))
}

// TestSharedClientSurvivesConsole checks that the console uses the process's
// client as it is, and that the client still works after the console served
// requests.
func TestSharedClientSurvivesConsole(t *testing.T) {
	rdb, _ := newRedis(t)
	require.Same(t, rdb, redisconn.Shared{Client: rdb}.MakeRedisClient())
	srv := newMonitoringServer(t, rdb, false)
	resp, _ := do(t, srv, request{method: http.MethodGet, path: MonitoringPath + "/api/queues", bearer: adminToken})
	require.Equal(t, http.StatusOK, resp.StatusCode)

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	require.NoError(t, rdb.Ping(ctx).Err())
}
