//go:build faults

package faults

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/internal/proctest"
	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/proto/protocolpb"
	"github.com/pulse-sched/pulse/store"
)

// env is one deployment under test: a redis-server, a plugins file, an API
// process and any number of scheduler and worker processes.
type env struct {
	t       *testing.T
	redis   *redistest.Server
	rdb     *redis.Client
	store   *store.Store
	plugins proctest.Plugins
	api     *proctest.Process

	mu      sync.Mutex
	workers []*proctest.Process
}

type envOptions struct {
	// AppendOnly starts Redis with the AOF on, so a restart keeps the data.
	AppendOnly bool
	// APIEnv holds extra PULSE_* variables of the API process.
	APIEnv map[string]string
}

// newEnv starts Redis and the API process.
func newEnv(t *testing.T, opts envOptions) *env {
	t.Helper()
	srv := redistest.StartWithOptions(t, redistest.Options{AppendOnly: opts.AppendOnly})
	e := &env{t: t, redis: srv, rdb: srv.Client(), plugins: proctest.WritePlugins(t, "faults")}
	e.api = e.start("api", "api", opts.APIEnv)
	e.api.WaitReady(t, 30*time.Second)

	st, err := store.New(e.rdb, store.Config{})
	require.NoError(t, err)
	e.store = st
	return e
}

// start starts one process of role with extra environment variables.
func (e *env) start(name, role string, vars map[string]string) *proctest.Process {
	e.t.Helper()
	return proctest.Start(e.t, proctest.Options{
		Name: name, Args: []string{role}, RedisURL: e.redis.URL(), PluginsFile: e.plugins.Path, Env: vars,
	})
}

// scheduler starts a scheduler process and waits until it is ready.
func (e *env) scheduler(name string, vars map[string]string) *proctest.Process {
	e.t.Helper()
	// A dead or frozen scheduler's partitions move to the others within 4/3
	// of the partition lease. At 600ms that is shorter than the 2s interval
	// of the tests' schedules, so a takeover delays a slot without skipping
	// one.
	withLease := map[string]string{"PULSE_PARTITION_LEASE": "600ms"}
	for k, v := range vars {
		withLease[k] = v
	}
	p := e.start(name, "scheduler", withLease)
	p.WaitReady(e.t, 30*time.Second)
	return p
}

// worker starts a worker process and waits until it is ready.
func (e *env) worker(name string, vars map[string]string) *proctest.Process {
	e.t.Helper()
	p := e.start(name, "worker", vars)
	p.WaitReady(e.t, 30*time.Second)
	e.mu.Lock()
	e.workers = append(e.workers, p)
	e.mu.Unlock()
	return p
}

func (e *env) client() protocolpb.ScheduleServiceClient { return e.api.Client(e.t) }

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	e.t.Cleanup(cancel)
	return ctx
}

// create creates a schedule through the API and returns its ID and grid
// anchor.
func (e *env) create(req *protocolpb.CreateScheduleRequest) (string, time.Time) {
	e.t.Helper()
	req.AuthToken = e.plugins.Token
	if req.HandlerName == "" {
		req.HandlerName = "pulse.log"
	}
	resp, err := e.client().CreateSchedule(e.ctx(), req)
	require.NoError(e.t, err)
	require.True(e.t, resp.GetSuccess(), "CreateSchedule failed: %s: %s", resp.GetErrorCode(), resp.GetError())
	s, err := e.store.GetSchedule(e.ctx(), resp.GetScheduleId(), "")
	require.NoError(e.t, err)
	return resp.GetScheduleId(), s.Anchor
}

// createDirect creates a schedule through the store, which allows intervals
// below the API's one-second minimum, so that tests can run hundreds of
// intervals in seconds. It belongs to the env's plugin, so the API can
// pause, resume and delete it.
func (e *env) createDirect(interval time.Duration, opts store.Options) *store.Schedule {
	e.t.Helper()
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Second
	}
	s, err := e.store.CreateSchedule(e.ctx(), store.NewSchedule{
		ID: newID(), ATSCode: e.plugins.ATSCode, HandlerName: "pulse.log",
		Interval: interval, MetadataJSON: "{}", Options: opts,
	})
	require.NoError(e.t, err)
	return s
}

func (e *env) get(id string) *store.Schedule {
	e.t.Helper()
	s, err := e.store.GetSchedule(e.ctx(), id, "")
	require.NoError(e.t, err)
	return s
}

func (e *env) pause(id string) {
	e.t.Helper()
	resp, err := e.client().PauseSchedule(e.ctx(), &protocolpb.PauseScheduleRequest{AuthToken: e.plugins.Token, ScheduleId: id})
	require.NoError(e.t, err)
	require.True(e.t, resp.GetSuccess(), "PauseSchedule failed: %s", resp.GetError())
}

func (e *env) resume(id string) {
	e.t.Helper()
	resp, err := e.client().ResumeSchedule(e.ctx(), &protocolpb.ResumeScheduleRequest{AuthToken: e.plugins.Token, ScheduleId: id})
	require.NoError(e.t, err)
	require.True(e.t, resp.GetSuccess(), "ResumeSchedule failed: %s", resp.GetError())
}

func (e *env) delete(id string) {
	e.t.Helper()
	resp, err := e.client().DeleteSchedule(e.ctx(), &protocolpb.DeleteScheduleRequest{AuthToken: e.plugins.Token, ScheduleId: id})
	require.NoError(e.t, err)
	require.True(e.t, resp.GetSuccess(), "DeleteSchedule failed: %s", resp.GetError())
}

// redisNow returns the Redis time, the clock of every due decision and of
// the started_at and finished_at records.
func (e *env) redisNow() time.Time {
	e.t.Helper()
	now, err := e.store.ServerTime(e.ctx())
	require.NoError(e.t, err)
	return now
}

// run is one execution attempt as the workers logged it.
type run struct {
	worker      string
	scheduleID  string
	executionID string
	slot        time.Time
	attempt     int
	startedAt   time.Time
	// finishedAt is zero when the attempt has not finished, or its worker
	// died first.
	finishedAt time.Time
	status     string
}

// runs returns every execution attempt logged by the env's workers, by
// schedule, in slot order.
func (e *env) runs() map[string][]run {
	e.t.Helper()
	e.mu.Lock()
	workers := slices.Clone(e.workers)
	e.mu.Unlock()

	type attemptKey struct {
		execution string
		attempt   int
	}
	byAttempt := map[attemptKey]*run{}
	var order []attemptKey
	for _, w := range workers {
		for _, l := range w.Lines() {
			msg := l.Msg()
			if msg != "execution started" && msg != "execution finished" {
				continue
			}
			key := attemptKey{l.String("execution_id"), int(l.Fields["attempt"].(float64))}
			r, ok := byAttempt[key]
			if !ok {
				r = &run{worker: w.Name(), scheduleID: l.String("schedule_id"), executionID: key.execution,
					slot: parseTime(e.t, l.String("slot")), attempt: key.attempt}
				byAttempt[key] = r
				order = append(order, key)
			}
			if msg == "execution started" {
				r.startedAt = parseTime(e.t, l.String("started_at"))
			} else {
				r.finishedAt = parseTime(e.t, l.String("finished_at"))
				r.status = l.String("status")
			}
		}
	}

	out := map[string][]run{}
	for _, key := range order {
		r := byAttempt[key]
		out[r.scheduleID] = append(out[r.scheduleID], *r)
	}
	for id := range out {
		slices.SortStableFunc(out[id], func(a, b run) int { return a.slot.Compare(b.slot) })
	}
	return out
}

func parseTime(t *testing.T, s string) time.Time {
	t.Helper()
	parsed, err := time.Parse(time.RFC3339Nano, s)
	require.NoError(t, err, "time %q in a log record", s)
	return parsed
}

// firstAttempts returns the runs of one schedule with attempt 0.
func firstAttempts(runs []run) []run {
	var out []run
	for _, r := range runs {
		if r.attempt == 0 {
			out = append(out, r)
		}
	}
	return out
}

// requireOncePerSlot fails when a slot of the schedule started twice as a
// first attempt, or lies off the grid.
func requireOncePerSlot(t *testing.T, id string, runs []run, anchor time.Time, interval time.Duration) {
	t.Helper()
	seen := map[int64]string{}
	for _, r := range firstAttempts(runs) {
		offset := r.slot.Sub(anchor)
		require.Zero(t, offset%interval, "schedule %s: slot %s is off the grid anchored at %s every %s", id, r.slot, anchor, interval)
		ms := r.slot.UnixMilli()
		if other, dup := seen[ms]; dup {
			t.Fatalf("schedule %s: slot %s started twice, on %s and %s", id, r.slot, other, r.worker)
		}
		seen[ms] = r.worker
	}
}

// requireNoGap fails when a grid slot from first to last (both included)
// has no first attempt.
func requireNoGap(t *testing.T, id string, runs []run, first, last time.Time, interval time.Duration) {
	t.Helper()
	have := map[int64]bool{}
	for _, r := range firstAttempts(runs) {
		have[r.slot.UnixMilli()] = true
	}
	var missing []string
	for slot := first; !slot.After(last); slot = slot.Add(interval) {
		if !have[slot.UnixMilli()] {
			missing = append(missing, slot.Format(time.RFC3339Nano))
		}
	}
	require.Empty(t, missing, "schedule %s: slots without an execution", id)
}

// gridSlotAtOrAfter returns the first slot of the grid at or after t.
func gridSlotAtOrAfter(anchor time.Time, interval time.Duration, t time.Time) time.Time {
	if !t.After(anchor) {
		return anchor
	}
	k := (t.Sub(anchor) + interval - 1) / interval
	return anchor.Add(k * interval)
}

// waitFor polls cond every 50ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metricValue returns the sum of the samples of name whose labels include
// every pair in labels, from a process's /metrics.
func metricValue(t *testing.T, p *proctest.Process, name string, labels map[string]string) float64 {
	t.Helper()
	status, body := p.HTTPGet(t, "/metrics")
	require.Equal(t, 200, status, "GET /metrics of %s", p.Name())
	line := regexp.MustCompile(`^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? (\S+)$`)
	var sum float64
	for _, text := range strings.Split(body, "\n") {
		m := line.FindStringSubmatch(text)
		if m == nil {
			continue
		}
		match := true
		for _, k := range slices.Sorted(maps.Keys(labels)) {
			if !strings.Contains(m[1], fmt.Sprintf("%s=%q", k, labels[k])) {
				match = false
			}
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		require.NoError(t, err, "value of %s", text)
		sum += v
	}
	return sum
}
