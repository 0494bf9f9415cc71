package plugine2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/health"

	"github.com/pulse-sched/pulse/api"
	"github.com/pulse-sched/pulse/client"
	"github.com/pulse-sched/pulse/internal/metrics"
	"github.com/pulse-sched/pulse/internal/redisconn"
	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/scheduler"
	"github.com/pulse-sched/pulse/store"
	"github.com/pulse-sched/pulse/worker"
)

// waitTimeout bounds every wait for an outcome.
const waitTimeout = 20 * time.Second

// plugin is one entry of the test registry; its token is "token-" + its
// ats_code.
type plugin struct {
	atsCode  string
	endpoint string // empty for none
}

type envConfig struct {
	plugins []plugin
	// worker holds the concurrency settings; the env sets the rest.
	worker worker.Config
	// localHandlers are accepted by the API for plugins without an
	// endpoint, without being registered in the worker.
	localHandlers []string
}

// env runs the API, a scheduler and a worker in this process against a
// redis-server of its own.
type env struct {
	clients   map[string]*client.Client
	inspector *asynq.Inspector
}

func startEnv(t *testing.T, cfg envConfig) *env {
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
	st, err := store.New(rdb, store.Config{Partitions: 4})
	require.NoError(t, err)
	require.NoError(t, st.Init(context.Background()))

	var yaml strings.Builder
	yaml.WriteString("plugins:\n")
	for _, p := range cfg.plugins {
		fmt.Fprintf(&yaml, "  - ats_code: %s\n    token_sha256: %s\n", p.atsCode, api.TokenDigest("token-"+p.atsCode))
		if p.endpoint != "" {
			fmt.Fprintf(&yaml, "    endpoint: %q\n", p.endpoint)
		}
	}
	registry := api.NewRegistry()
	require.NoError(t, registry.Load([]byte(yaml.String())))
	svc, err := api.NewService(st, registry, api.Config{LocalHandlers: cfg.localHandlers}, logger, m)
	require.NoError(t, err)
	grpcServer := api.NewGRPCServer(svc, health.NewServer(), logger)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go grpcServer.Serve(lis)
	t.Cleanup(grpcServer.Stop)

	sched, err := scheduler.New(st, asynq.NewClientFromRedisClient(rdb), scheduler.Config{PollInterval: 50 * time.Millisecond}, logger, m)
	require.NoError(t, err)
	wcfg := cfg.worker
	wcfg.PollInterval, wcfg.DrainTimeout = 20*time.Millisecond, time.Second
	w, err := worker.New(rdb, st, wcfg, logger, m)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	var roles sync.WaitGroup
	roles.Add(2)
	go func() { defer roles.Done(); sched.Run(ctx) }()
	go func() { defer roles.Done(); w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		stopped := make(chan struct{})
		go func() { roles.Wait(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(20 * time.Second):
			t.Error("the scheduler or the worker did not stop within 20s")
		}
	})

	e := &env{clients: map[string]*client.Client{}, inspector: asynq.NewInspectorFromRedisClient(rdb)}
	for _, p := range cfg.plugins {
		c, err := client.New(lis.Addr().String(), "token-"+p.atsCode)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		e.clients[p.atsCode] = c
	}
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// create creates a schedule for the plugin and returns its ID.
func (e *env) create(t *testing.T, atsCode string, spec client.ScheduleSpec) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	id, err := e.clients[atsCode].Create(ctx, spec)
	require.NoError(t, err, "create %s for %s", spec.Handler, atsCode)
	return id
}

func (e *env) get(t *testing.T, atsCode, id string) *client.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	job, err := e.clients[atsCode].Get(ctx, id)
	require.NoError(t, err)
	return job
}

// waitJob waits until the schedule satisfies cond and returns it.
func (e *env) waitJob(t *testing.T, atsCode, id string, what string, cond func(*client.Job) bool) *client.Job {
	t.Helper()
	var job *client.Job
	ok := assertEventually(func() bool {
		job = e.get(t, atsCode, id)
		return cond(job)
	})
	require.Truef(t, ok, "schedule %s: %s within %s; last seen: %v", id, what, waitTimeout, job)
	return job
}

// assertEventually polls cond every 20ms until it holds or waitTimeout
// passes, and reports whether it held.
func assertEventually(cond func() bool) bool {
	deadline := time.Now().Add(waitTimeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// call is one Execute call that a fake plugin received.
type call struct {
	req client.Request
	at  time.Time
}

// fakePlugin serves handlers and records every call.
type fakePlugin struct {
	mu    sync.Mutex
	calls []call
}

// serve serves the handlers on a loopback port until the test ends and
// returns the address.
func (f *fakePlugin) serve(t *testing.T, handlers map[string]client.HandlerFunc) string {
	t.Helper()
	recorded := map[string]client.HandlerFunc{}
	for name, fn := range handlers {
		recorded[name] = func(ctx context.Context, req *client.Request) error {
			f.mu.Lock()
			f.calls = append(f.calls, call{req: *req, at: time.Now()})
			f.mu.Unlock()
			return fn(ctx, req)
		}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = client.ServeHandlers(ctx, lis, recorded)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return lis.Addr().String()
}

// of returns the calls of one schedule in arrival order.
func (f *fakePlugin) of(scheduleID string) []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []call
	for _, c := range f.calls {
		if c.req.ScheduleID == scheduleID {
			out = append(out, c)
		}
	}
	return out
}

// count returns the number of calls so far.
func (f *fakePlugin) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// peakArrivals returns the largest number of calls that arrived within
// window of each other.
func (f *fakePlugin) peakArrivals(window time.Duration) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	peak := 0
	for i, first := range f.calls {
		n := 0
		for _, c := range f.calls[i:] {
			if c.at.Sub(first.at) < window {
				n++
			}
		}
		peak = max(peak, n)
	}
	return peak
}

// hang returns a handler that never responds: it returns only when the test
// ends, so every call to it reaches its deadline in the worker.
func hang(t *testing.T) client.HandlerFunc {
	return func(context.Context, *client.Request) error {
		<-t.Context().Done()
		return nil
	}
}

// attemptsOf counts the calls of one execution so far, this one included.
func (f *fakePlugin) attemptsOf(executionID string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c.req.ExecutionID == executionID {
			n++
		}
	}
	return n
}
