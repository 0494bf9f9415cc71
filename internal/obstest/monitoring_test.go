package obstest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/internal/proctest"
	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/proto/protocolpb"
)

// queueFixture is an API and a scheduler without a worker, so that the slot
// tasks of its schedules stay pending in the queue "pulse".
type queueFixture struct {
	redis     *redistest.Server
	reg       registry
	api       *proctest.Process
	scheduler *proctest.Process
	// tasks is the number of pending tasks.
	tasks int
}

// startQueueFixture creates n schedules whose first slot is due at once and
// the next one an hour later, and waits until their n tasks are pending.
func startQueueFixture(t *testing.T, n int) *queueFixture {
	t.Helper()
	f := &queueFixture{redis: redistest.Start(t), reg: writeRegistry(t), tasks: n}
	f.api = proctest.Start(t, proctest.Options{
		Name: "api", Args: []string{"api"}, RedisURL: f.redis.URL(), PluginsFile: f.reg.Path,
	})
	f.scheduler = proctest.Start(t, proctest.Options{
		Name: "scheduler", Args: []string{"scheduler"}, RedisURL: f.redis.URL(),
	})
	f.api.WaitReady(t, readyTimeout)
	f.scheduler.WaitReady(t, readyTimeout)

	client := f.api.Client(t)
	for range n {
		create(t, client, f.reg.PluginToken, &protocolpb.CreateScheduleRequest{
			HandlerName: "pulse.log", IntervalSeconds: 3600, RunImmediately: true,
		})
	}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		q, err := f.queue(f.api, f.reg.AdminToken)
		if assert.NoError(c, err) {
			assert.Equal(c, n, q.Pending, "pending tasks")
		}
	}, 15*time.Second, 100*time.Millisecond)
	return f
}

// queueInfo is the part of asynqmon's queue that the tests read.
type queueInfo struct {
	Queue   string `json:"queue"`
	Size    int    `json:"size"`
	Pending int    `json:"pending"`
}

// queue reads the queue "pulse" through the console's API of p.
func (f *queueFixture) queue(p *proctest.Process, token string) (queueInfo, error) {
	resp, body, err := monitoringRequest(p, http.MethodGet, "/monitoring/api/queues/pulse", token)
	if err != nil {
		return queueInfo{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return queueInfo{}, &statusError{resp.StatusCode, body}
	}
	var q struct {
		Current queueInfo `json:"current"`
	}
	err = json.Unmarshal([]byte(body), &q)
	return q.Current, err
}

type statusError struct {
	status int
	body   string
}

func (e *statusError) Error() string { return http.StatusText(e.status) + ": " + e.body }

// monitoringRequest sends a request to the admin HTTP server of p, with
// token as a bearer token unless empty.
func monitoringRequest(p *proctest.Process, method, path, token string) (*http.Response, string, error) {
	req, err := http.NewRequest(method, "http://"+p.HTTPAddr()+path, nil)
	if err != nil {
		return nil, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}

func mustRequest(t *testing.T, p *proctest.Process, method, path, token string) (*http.Response, string) {
	t.Helper()
	resp, body, err := monitoringRequest(p, method, path, token)
	require.NoError(t, err)
	return resp, body
}

// TestMonitoringConsole checks /monitoring of a real pulse api: 401 without
// the admin token, the console's page and queue API with it, a read-only
// console that refuses a delete, and a writable one that performs it.
func TestMonitoringConsole(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three pulse processes for a few seconds")
	}
	f := startQueueFixture(t, 3)

	resp, _ := mustRequest(t, f.api, http.MethodGet, "/monitoring/", "")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.Contains(t, resp.Header.Get("WWW-Authenticate"), "Basic")
	resp, _ = mustRequest(t, f.api, http.MethodGet, "/monitoring/api/queues", "")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp, _ = mustRequest(t, f.api, http.MethodGet, "/monitoring/", f.reg.PluginToken)
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "a plugin token is not an admin token")

	resp, body := mustRequest(t, f.api, http.MethodGet, "/monitoring/", f.reg.AdminToken)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, body, "<title>Asynq - Monitoring</title>")

	// Basic authentication with the token as password works too.
	req, err := http.NewRequest(http.MethodGet, "http://"+f.api.HTTPAddr()+"/monitoring/api/queues", nil)
	require.NoError(t, err)
	req.SetBasicAuth("sre", f.reg.AdminToken)
	basic, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	basicBody, err := io.ReadAll(basic.Body)
	basic.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, basic.StatusCode)
	var queues struct {
		Queues []queueInfo `json:"queues"`
	}
	require.NoError(t, json.Unmarshal(basicBody, &queues))
	require.Len(t, queues.Queues, 1)
	require.Equal(t, "pulse", queues.Queues[0].Queue)
	require.Equal(t, f.tasks, queues.Queues[0].Size)

	// The read-only console refuses to delete a pending task.
	taskID := firstPendingTask(t, f.api, f.reg.AdminToken)
	resp, body = mustRequest(t, f.api, http.MethodDelete, "/monitoring/api/queues/pulse/pending_tasks/"+taskID, f.reg.AdminToken)
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, body)
	q, err := f.queue(f.api, f.reg.AdminToken)
	require.NoError(t, err)
	require.Equal(t, f.tasks, q.Pending, "the refused delete left the task")

	// A console started with --monitoring-writable deletes it.
	writable := proctest.Start(t, proctest.Options{
		Name: "api-writable", Args: []string{"api"}, RedisURL: f.redis.URL(), PluginsFile: f.reg.Path,
		Env: map[string]string{"PULSE_MONITORING_WRITABLE": "true"},
	})
	writable.WaitReady(t, readyTimeout)
	resp, body = mustRequest(t, writable, http.MethodDelete, "/monitoring/api/queues/pulse/pending_tasks/"+taskID, f.reg.AdminToken)
	require.Equal(t, http.StatusNoContent, resp.StatusCode, body)
	q, err = f.queue(f.api, f.reg.AdminToken)
	require.NoError(t, err)
	require.Equal(t, f.tasks-1, q.Pending)

	// Only processes that run the API, and so hold the registry, serve it.
	status, _ := f.scheduler.HTTPGet(t, "/monitoring/")
	require.Equal(t, http.StatusNotFound, status)
}

// firstPendingTask returns the ID of a pending task of the queue "pulse".
func firstPendingTask(t *testing.T, p *proctest.Process, token string) string {
	t.Helper()
	resp, body := mustRequest(t, p, http.MethodGet, "/monitoring/api/queues/pulse/pending_tasks", token)
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	var tasks struct {
		Tasks []struct {
			ID string `json:"id"`
		} `json:"tasks"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &tasks))
	require.NotEmpty(t, tasks.Tasks)
	return tasks.Tasks[0].ID
}

// TestMonitoringDevToken checks the development mode: pulse serve on the
// embedded Redis without a plugins file accepts the printed dev token on
// /monitoring.
func TestMonitoringDevToken(t *testing.T) {
	if testing.Short() {
		t.Skip("runs pulse serve")
	}
	const token = "dev-obstest-token"
	srv := proctest.Start(t, proctest.Options{
		Name: "serve-dev", Args: []string{"serve"}, Env: map[string]string{"PULSE_DEV_TOKEN": token},
	})
	srv.WaitReady(t, readyTimeout)

	resp, _ := mustRequest(t, srv, http.MethodGet, "/monitoring/api/queues", "")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp, _ = mustRequest(t, srv, http.MethodGet, "/monitoring/api/queues", "another-token")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp, body := mustRequest(t, srv, http.MethodGet, "/monitoring/api/queues", token)
	require.Equal(t, http.StatusOK, resp.StatusCode, body)

	// PULSE_MONITORING=false (--no-monitoring) turns the console off.
	off := proctest.Start(t, proctest.Options{
		Name: "serve-dev-off", Args: []string{"serve"},
		Env: map[string]string{"PULSE_DEV_TOKEN": token, "PULSE_MONITORING": "false"},
	})
	off.WaitReady(t, readyTimeout)
	resp, _ = mustRequest(t, off, http.MethodGet, "/monitoring/api/queues", token)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
}
