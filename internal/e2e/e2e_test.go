// Package e2e runs the API, a scheduler and a worker in one test process
// against a real redis-server, and drives schedules through the gRPC API.
package e2e

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"

	"github.com/pulse-sched/pulse/api"
	"github.com/pulse-sched/pulse/internal/metrics"
	"github.com/pulse-sched/pulse/internal/redisconn"
	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/proto/protocolpb"
	"github.com/pulse-sched/pulse/scheduler"
	"github.com/pulse-sched/pulse/store"
	"github.com/pulse-sched/pulse/worker"
)

const (
	token       = "plugin-acme-token"
	recordName  = "test.record"
	waitTimeout = 15 * time.Second
)

// run is one execution seen by the recording handler.
type run struct {
	scheduleID  string
	executionID string
	slot        time.Time
	attempt     int
	startedAt   time.Time
}

// recorder is a handler that keeps every execution it runs.
type recorder struct {
	mu   sync.Mutex
	runs []run
}

func (r *recorder) handle(_ context.Context, e *worker.Execution) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.runs = append(r.runs, run{e.ScheduleID, e.ID, e.Slot, e.Attempt, time.Now()})
	return nil
}

// of returns the runs of one schedule in start order.
func (r *recorder) of(scheduleID string) []run {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []run
	for _, x := range r.runs {
		if x.scheduleID == scheduleID {
			out = append(out, x)
		}
	}
	return out
}

type env struct {
	client   protocolpb.ScheduleServiceClient
	recorder *recorder
}

// start runs the three roles in this process on a fresh redis-server.
func start(t *testing.T) *env {
	t.Helper()
	srv := redistest.Start(t)
	rdb, err := redisconn.NewClient(srv.URL())
	require.NoError(t, err)
	t.Cleanup(func() { rdb.Close() })

	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	m := metrics.NewUnregistered()
	st, err := store.New(rdb, store.Config{})
	require.NoError(t, err)
	require.NoError(t, st.Init(context.Background()))

	registry := api.NewRegistry()
	require.NoError(t, registry.Load([]byte("plugins:\n  - ats_code: acme\n    token_sha256: "+api.TokenDigest(token)+"\n")))
	svc, err := api.NewService(st, registry, api.Config{LocalHandlers: []string{recordName}}, logger, m)
	require.NoError(t, err)
	grpcServer := api.NewGRPCServer(svc, health.NewServer(), logger)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go grpcServer.Serve(lis)
	t.Cleanup(grpcServer.Stop)

	ctx, cancel := context.WithCancel(context.Background())
	var roles sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		roles.Wait()
	})

	sched, err := scheduler.New(st, asynq.NewClientFromRedisClient(rdb), scheduler.Config{PollInterval: 50 * time.Millisecond}, logger, m)
	require.NoError(t, err)
	w, err := worker.New(rdb, st, worker.Config{PollInterval: 20 * time.Millisecond, DrainTimeout: time.Second}, logger, m)
	require.NoError(t, err)
	rec := &recorder{}
	w.Handle(recordName, rec.handle)
	roles.Add(2)
	go func() { defer roles.Done(); sched.Run(ctx) }()
	go func() { defer roles.Done(); w.Run(ctx) }()

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return &env{client: protocolpb.NewScheduleServiceClient(conn), recorder: rec}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func (e *env) get(t *testing.T, id string) *protocolpb.ScheduledJob {
	t.Helper()
	resp, err := e.client.GetSchedule(context.Background(), &protocolpb.GetScheduleRequest{AuthToken: token, ScheduleId: id})
	require.NoError(t, err)
	require.True(t, resp.GetSuccess(), "GetSchedule failed: %s", resp.GetError())
	return resp.GetJob()
}

func parseTime(t *testing.T, field, value string) time.Time {
	t.Helper()
	require.NotEmpty(t, value, "%s is empty", field)
	parsed, err := time.Parse(time.RFC3339Nano, value)
	require.NoError(t, err, "%s %q is not RFC 3339", field, value)
	require.Equal(t, time.UTC, parsed.Location(), "%s %q is not in UTC", field, value)
	require.Equal(t, byte('Z'), value[len(value)-1], "%s %q does not end in Z", field, value)
	return parsed
}

// requireOnGrid checks that every run's slot is anchor + k*interval for
// some k >= 1.
func requireOnGrid(t *testing.T, runs []run, anchor time.Time, interval time.Duration) {
	t.Helper()
	for _, r := range runs {
		offset := r.slot.Sub(anchor)
		require.Zero(t, offset%interval, "slot %s is off the grid anchored at %s", r.slot, anchor)
		require.Positive(t, offset, "slot %s is not after the anchor %s", r.slot, anchor)
	}
}

func TestScheduleLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for about 15 seconds")
	}
	e := start(t)
	ctx := context.Background()

	created, err := e.client.CreateSchedule(ctx, &protocolpb.CreateScheduleRequest{
		AuthToken: token, HandlerName: recordName, IntervalSeconds: 1,
		Payload: []byte("hello"), Metadata: map[string]string{"team": "core"},
	})
	require.NoError(t, err)
	require.True(t, created.GetSuccess(), "CreateSchedule failed: %s", created.GetError())
	id := created.GetScheduleId()

	job := e.get(t, id)
	anchor := parseTime(t, "created_at", job.GetCreatedAt())
	parseTime(t, "updated_at", job.GetUpdatedAt())
	require.Equal(t, anchor.Add(time.Second), parseTime(t, "next_run_at", job.GetNextRunAt()))
	require.Empty(t, job.GetLastRunAt())
	require.Equal(t, "active", job.GetState())

	// Active: at least three executions, each on the grid, one per slot.
	require.Eventually(t, func() bool { return len(e.recorder.of(id)) >= 3 }, waitTimeout, 20*time.Millisecond)
	runs := e.recorder.of(id)
	requireOnGrid(t, runs, anchor, time.Second)
	for i := 1; i < len(runs); i++ {
		require.Equal(t, runs[i-1].slot.Add(time.Second), runs[i].slot, "slots of runs %d and %d are not consecutive", i-1, i)
	}

	job = e.get(t, id)
	lastRun := parseTime(t, "last_run_at", job.GetLastRunAt())
	require.NotEmpty(t, job.GetLastExecutionId())
	seen := false
	for _, r := range e.recorder.of(id) {
		if r.executionID == job.GetLastExecutionId() {
			seen = true
			require.Equal(t, r.slot, lastRun, "last_run_at is not the slot of last_execution_id")
		}
	}
	require.True(t, seen, "last_execution_id %s was never run", job.GetLastExecutionId())

	// Paused: no execution starts for 3 seconds.
	paused, err := e.client.PauseSchedule(ctx, &protocolpb.PauseScheduleRequest{AuthToken: token, ScheduleId: id})
	require.NoError(t, err)
	require.True(t, paused.GetSuccess(), "PauseSchedule failed: %s", paused.GetError())
	pausedAt := time.Now()
	require.Equal(t, "paused", e.get(t, id).GetState())
	require.Empty(t, e.get(t, id).GetNextRunAt())
	countAtPause := len(e.recorder.of(id))
	time.Sleep(3 * time.Second)
	for _, r := range e.recorder.of(id)[countAtPause:] {
		require.False(t, r.startedAt.After(pausedAt), "execution %s started at %s, after the pause at %s", r.executionID, r.startedAt, pausedAt)
	}

	// Resumed: runs again from the first grid slot after the resume, with no
	// burst of the slots missed while paused.
	resumed, err := e.client.ResumeSchedule(ctx, &protocolpb.ResumeScheduleRequest{AuthToken: token, ScheduleId: id})
	require.NoError(t, err)
	require.True(t, resumed.GetSuccess(), "ResumeSchedule failed: %s", resumed.GetError())
	resumedAt := time.Now()
	job = e.get(t, id)
	require.Equal(t, "active", job.GetState())
	nextAfterResume := parseTime(t, "next_run_at", job.GetNextRunAt())
	require.Zero(t, nextAfterResume.Sub(anchor)%time.Second, "next_run_at %s after resume is off the grid", nextAfterResume)
	countAtResume := len(e.recorder.of(id))
	require.Eventually(t, func() bool { return len(e.recorder.of(id)) >= countAtResume+2 }, waitTimeout, 20*time.Millisecond)
	afterResume := e.recorder.of(id)[countAtResume:]
	require.Equal(t, nextAfterResume, afterResume[0].slot, "first slot after resume")
	require.True(t, afterResume[0].slot.After(resumedAt.Add(-50*time.Millisecond)), "first slot after resume %s is before the resume at %s", afterResume[0].slot, resumedAt)
	requireOnGrid(t, afterResume, anchor, time.Second)
	require.Equal(t, afterResume[0].slot.Add(time.Second), afterResume[1].slot, "slots after resume are not consecutive")

	// Deleted: readable with state deleted, and nothing runs afterwards.
	deleted, err := e.client.DeleteSchedule(ctx, &protocolpb.DeleteScheduleRequest{AuthToken: token, ScheduleId: id})
	require.NoError(t, err)
	require.True(t, deleted.GetSuccess(), "DeleteSchedule failed: %s", deleted.GetError())
	deletedAt := time.Now()
	job = e.get(t, id)
	require.Equal(t, "deleted", job.GetState())
	require.Empty(t, job.GetNextRunAt())
	parseTime(t, "updated_at", job.GetUpdatedAt())
	parseTime(t, "last_run_at", job.GetLastRunAt())
	time.Sleep(2500 * time.Millisecond)
	for _, r := range e.recorder.of(id) {
		require.False(t, r.startedAt.After(deletedAt), "execution %s started at %s, after the delete at %s", r.executionID, r.startedAt, deletedAt)
	}

	// Every execution ran once.
	perSlot := map[time.Time]int{}
	for _, r := range e.recorder.of(id) {
		perSlot[r.slot]++
		require.Equal(t, 1, perSlot[r.slot], "slot %s ran twice", r.slot)
		require.Zero(t, r.attempt)
	}
}
