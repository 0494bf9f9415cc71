package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/internal/logging"
	"github.com/pulse-sched/pulse/internal/metrics"
	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/internal/task"
	"github.com/pulse-sched/pulse/store"
)

// workerWait is the deadline of every wait in these tests.
const workerWait = 10 * time.Second

var workerTestCounter atomic.Int64

// workerEnv is a store and a queue of their own on a shared redis-server.
type workerEnv struct {
	rdb   *redis.Client
	st    *store.Store
	queue string
}

// newWorkerEnv returns an env with a new store prefix and queue on rdb.
func newWorkerEnv(t *testing.T, rdb *redis.Client) workerEnv {
	t.Helper()
	n := workerTestCounter.Add(1)
	st, err := store.New(rdb, store.Config{Prefix: fmt.Sprintf("workertest%d", n), Partitions: 2})
	require.NoError(t, err)
	require.NoError(t, st.Init(workerContext(t)))
	return workerEnv{rdb: rdb, st: st, queue: fmt.Sprintf("workertest%d", n)}
}

// workerContext returns a context that ends with the test or after 30s.
func workerContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// quietLogger returns a logger that writes nothing.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newTestWorker returns a worker on the env's queue with short waits.
func (e workerEnv) newTestWorker(t *testing.T, m *metrics.Metrics) *Worker {
	t.Helper()
	w, err := New(e.rdb, e.st, Config{
		Queue: e.queue, Concurrency: 4, PollInterval: 10 * time.Millisecond,
		RunningLeaseGrace: time.Second, DrainTimeout: time.Second,
	}, quietLogger(), m)
	require.NoError(t, err)
	return w
}

// run runs w until the test ends.
func (e workerEnv) run(t *testing.T, w *Worker) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = w.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// createSchedule creates a schedule of one hour that runs handler. It has no
// source URL, so only the worker's own handlers can run it.
func (e workerEnv) createSchedule(t *testing.T, handler string, o store.Options) *store.Schedule {
	t.Helper()
	s, err := e.st.CreateSchedule(workerContext(t), store.NewSchedule{
		ID:           ulid.Make().String(),
		ATSCode:      "alpha",
		HandlerName:  handler,
		Interval:     time.Hour,
		Payload:      []byte("payload"),
		MetadataJSON: `{"team":"billing"}`,
		Options:      o,
	})
	require.NoError(t, err)
	return s
}

// slotTask returns the task of count slots of s from its next slot, as the
// scheduler makes it.
func slotTask(s *store.Schedule, count int) task.Slot {
	return task.Slot{
		SlotRef:  store.SlotRef{ScheduleID: s.ID, Slot: s.NextRunAt, Generation: s.Generation},
		Count:    count,
		Interval: s.Interval,
		Timeout:  s.Timeout,
		MaxRetry: s.MaxRetry,
	}
}

// enqueue puts the task of slot into the env's queue with the options the
// scheduler gives it, and a retention so that its end stays visible.
func (e workerEnv) enqueue(t *testing.T, slot task.Slot) {
	t.Helper()
	_, err := asynq.NewClientFromRedisClient(e.rdb).EnqueueContext(workerContext(t), asynq.NewTask(task.TypeSlot, task.Encode(slot),
		asynq.TaskID(slot.ExecutionID()),
		asynq.Queue(e.queue),
		asynq.MaxRetry(slot.AsynqMaxRetry()),
		asynq.Timeout(slot.AsynqTimeout()),
		asynq.Retention(time.Minute),
	))
	require.NoError(t, err)
}

// waitTaskState waits until the task of slot is in state and returns it.
func (e workerEnv) waitTaskState(t *testing.T, slot task.Slot, state asynq.TaskState) *asynq.TaskInfo {
	t.Helper()
	inspector := asynq.NewInspectorFromRedisClient(e.rdb)
	var info *asynq.TaskInfo
	require.Eventually(t, func() bool {
		got, err := inspector.GetTaskInfo(e.queue, slot.ExecutionID())
		if err != nil || got.State != state {
			return false
		}
		info = got
		return true
	}, workerWait, 10*time.Millisecond, "task of schedule %s never reached state %s", slot.ScheduleID, state)
	return info
}

// schedule reads the schedule id from the store.
func (e workerEnv) schedule(t *testing.T, id string) *store.Schedule {
	t.Helper()
	s, err := e.st.GetSchedule(workerContext(t), id, "")
	require.NoError(t, err)
	return s
}

// markerHolder returns the execution that holds the schedule's running
// marker (field "rx" of the schedule hash), or "" when none does.
func (e workerEnv) markerHolder(ctx context.Context, id string) (string, error) {
	keys := e.st.Keys()
	v, err := e.rdb.HGet(ctx, keys.ScheduleKey(keys.PartitionOf(id), id), "rx").Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, err
}

// recorder is a handler that records each execution it runs.
type recorder struct {
	mu    sync.Mutex
	calls []Execution
	// run, when set, decides the outcome of each call.
	run func(ctx context.Context, e *Execution) error
}

func (r *recorder) handle(ctx context.Context, e *Execution) error {
	r.mu.Lock()
	r.calls = append(r.calls, *e)
	r.mu.Unlock()
	if r.run != nil {
		return r.run(ctx, e)
	}
	return nil
}

func (r *recorder) executions() []Execution {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Execution(nil), r.calls...)
}

func TestWorkerRuns(t *testing.T) {
	rdb := redistest.Start(t).Client()

	t.Run("slot runs handler", func(t *testing.T) {
		e := newWorkerEnv(t, rdb)
		rec := &recorder{}
		w := e.newTestWorker(t, metrics.NewUnregistered())
		w.Handle("test.record", rec.handle)
		e.run(t, w)
		s := e.createSchedule(t, "test.record", store.Options{Timeout: 5 * time.Second, MaxRetry: 3})
		slot := slotTask(s, 1)

		e.enqueue(t, slot)
		e.waitTaskState(t, slot, asynq.TaskStateCompleted)

		want := Execution{
			ID: slot.ExecutionID(), ScheduleID: s.ID, ATSCode: "alpha", HandlerName: "test.record",
			Slot: s.NextRunAt, Attempt: 0, Payload: []byte("payload"), Metadata: map[string]string{"team": "billing"},
		}
		require.Equal(t, []Execution{want}, rec.executions(), "executions")
		got := e.schedule(t, s.ID)
		require.Equal(t, store.StatusSucceeded, got.LastStatus, "last status")
		require.Equal(t, slot.ExecutionID(), got.LastExecutionID, "last execution")
		require.Equal(t, int64(1), got.TotalRuns, "total runs")
	})

	t.Run("range runs slots in order", func(t *testing.T) {
		e := newWorkerEnv(t, rdb)
		var (
			holdersMu sync.Mutex
			holders   []string
		)
		rec := &recorder{run: func(ctx context.Context, x *Execution) error {
			holder, err := e.markerHolder(ctx, x.ScheduleID)
			if err != nil {
				return err
			}
			holdersMu.Lock()
			defer holdersMu.Unlock()
			holders = append(holders, holder)
			return nil
		}}
		w := e.newTestWorker(t, metrics.NewUnregistered())
		w.Handle("test.range", rec.handle)
		e.run(t, w)
		// Under overlap skip, a slot that did not take over the kept marker
		// of the slot before it would be skipped.
		s := e.createSchedule(t, "test.range", store.Options{Timeout: 5 * time.Second, Overlap: store.OverlapSkip})
		slot := slotTask(s, 3)

		e.enqueue(t, slot)
		e.waitTaskState(t, slot, asynq.TaskStateCompleted)

		refs := slot.Slots()
		calls := rec.executions()
		require.Len(t, calls, 3, "executions")
		for i, c := range calls {
			require.Equal(t, refs[i].Slot, c.Slot, "slot of execution %d", i)
			require.Equal(t, refs[i].ExecutionID(), c.ID, "ID of execution %d", i)
		}
		holdersMu.Lock()
		require.Equal(t, []string{calls[0].ID, calls[1].ID, calls[2].ID}, holders, "marker holder while each slot ran")
		holdersMu.Unlock()
		got := e.schedule(t, s.ID)
		require.Equal(t, refs[2].Slot, got.LastRunAt, "last run")
		require.Equal(t, store.StatusSucceeded, got.LastStatus, "last status")
		require.Equal(t, int64(3), got.TotalRuns, "total runs")
		require.Zero(t, got.SkippedSlots, "skipped slots")
		holder, err := e.markerHolder(workerContext(t), s.ID)
		require.NoError(t, err)
		require.Empty(t, holder, "marker holder after the range")
	})

	t.Run("range stops when paused", func(t *testing.T) {
		e := newWorkerEnv(t, rdb)
		rec := &recorder{}
		rec.run = func(ctx context.Context, x *Execution) error {
			_, err := e.st.PauseSchedule(ctx, x.ScheduleID, "")
			return err
		}
		w := e.newTestWorker(t, metrics.NewUnregistered())
		w.Handle("test.pause", rec.handle)
		e.run(t, w)
		s := e.createSchedule(t, "test.pause", store.Options{Timeout: 5 * time.Second})
		slot := slotTask(s, 3)

		e.enqueue(t, slot)
		e.waitTaskState(t, slot, asynq.TaskStateCompleted)

		require.Len(t, rec.executions(), 1, "executions")
		holder, err := e.markerHolder(workerContext(t), s.ID)
		require.NoError(t, err)
		require.Empty(t, holder, "marker holder after the range")
	})

	t.Run("permanent error ends task at once", func(t *testing.T) {
		e := newWorkerEnv(t, rdb)
		rec := &recorder{run: func(context.Context, *Execution) error {
			return Permanent(errors.New("payload is not a report"))
		}}
		w := e.newTestWorker(t, metrics.NewUnregistered())
		w.Handle("test.permanent", rec.handle)
		e.run(t, w)
		s := e.createSchedule(t, "test.permanent", store.Options{Timeout: 5 * time.Second, MaxRetry: 3})
		slot := slotTask(s, 1)

		e.enqueue(t, slot)
		info := e.waitTaskState(t, slot, asynq.TaskStateCompleted)

		require.Zero(t, info.Retried, "asynq retries")
		require.Len(t, rec.executions(), 1, "executions")
		got := e.schedule(t, s.ID)
		require.Equal(t, store.StatusFailed, got.LastStatus, "last status")
		require.Equal(t, "payload is not a report", got.LastError, "last error")
		require.Equal(t, int64(1), got.ConsecutiveFailures, "consecutive failures")
	})

	t.Run("panic becomes failure", func(t *testing.T) {
		e := newWorkerEnv(t, rdb)
		rec := &recorder{run: func(context.Context, *Execution) error { panic("boom") }}
		calm := &recorder{}
		w := e.newTestWorker(t, metrics.NewUnregistered())
		w.Handle("test.panic", rec.handle)
		w.Handle("test.calm", calm.handle)
		e.run(t, w)
		s := e.createSchedule(t, "test.panic", store.Options{Timeout: 5 * time.Second})
		slot := slotTask(s, 1)

		e.enqueue(t, slot)
		e.waitTaskState(t, slot, asynq.TaskStateCompleted)

		got := e.schedule(t, s.ID)
		require.Equal(t, store.StatusFailed, got.LastStatus, "last status")
		require.Equal(t, `handler "test.panic" panicked: boom`, got.LastError, "last error")
		require.Equal(t, int64(1), got.ConsecutiveFailures, "consecutive failures")

		// The worker goes on with the next task.
		next := e.createSchedule(t, "test.calm", store.Options{Timeout: 5 * time.Second})
		nextSlot := slotTask(next, 1)
		e.enqueue(t, nextSlot)
		e.waitTaskState(t, nextSlot, asynq.TaskStateCompleted)
		require.Len(t, calm.executions(), 1, "executions after the panic")
	})

	t.Run("unregistered handler fails permanently", func(t *testing.T) {
		e := newWorkerEnv(t, rdb)
		m := metrics.NewUnregistered()
		e.run(t, e.newTestWorker(t, m))
		s := e.createSchedule(t, "no.such.handler", store.Options{Timeout: 5 * time.Second, MaxRetry: 3})
		slot := slotTask(s, 1)

		e.enqueue(t, slot)
		info := e.waitTaskState(t, slot, asynq.TaskStateCompleted)

		require.Zero(t, info.Retried, "asynq retries")
		got := e.schedule(t, s.ID)
		require.Equal(t, store.StatusFailed, got.LastStatus, "last status")
		require.Contains(t, got.LastError, `no handler named "no.such.handler" is registered in this worker`, "last error")
		require.Equal(t, int64(1), got.ConsecutiveFailures, "consecutive failures")
		require.Equal(t, float64(1), testutil.ToFloat64(m.Executions.WithLabelValues("other", string(store.StatusFailed))), "executions metric")
	})

	t.Run("spare delivery archived as failed", func(t *testing.T) {
		e := newWorkerEnv(t, rdb)
		s := e.createSchedule(t, "test.never", store.Options{Timeout: 5 * time.Second, MaxRetry: 0})
		slot := slotTask(s, 1)
		e.enqueue(t, slot)

		// A first worker starts the only attempt and is lost before it
		// records an outcome, so asynq counts a failure and delivers the
		// task again: the spare delivery of task.Slot.AsynqMaxRetry.
		lost := asynq.NewServerFromRedisClient(rdb, asynq.Config{
			Queues:                   map[string]int{e.queue: 1},
			Concurrency:              1,
			TaskCheckInterval:        10 * time.Millisecond,
			DelayedTaskCheckInterval: time.Hour,
			RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return 0 },
			Logger:                   logging.AsynqLogger{Logger: quietLogger()},
		})
		mux := asynq.NewServeMux()
		mux.HandleFunc(task.TypeSlot, func(ctx context.Context, _ *asynq.Task) error {
			_, v, err := e.st.StartExecution(ctx, store.StartRequest{Slot: slot.SlotRef, RunningLease: time.Minute})
			if err != nil {
				return err
			}
			if v != store.VerdictRun {
				return fmt.Errorf("unexpected start verdict %s", v)
			}
			return errors.New("worker lost")
		})
		require.NoError(t, lost.Start(mux))
		info := e.waitTaskState(t, slot, asynq.TaskStateRetry)
		lost.Shutdown()
		require.Equal(t, 1, info.Retried, "asynq retries before the spare delivery")
		require.Equal(t, store.StatusRunning, e.schedule(t, s.ID).LastStatus, "last status before the spare delivery")

		rec := &recorder{}
		m := metrics.NewUnregistered()
		w := e.newTestWorker(t, m)
		w.Handle("test.never", rec.handle)
		e.run(t, w)

		e.waitTaskState(t, slot, asynq.TaskStateArchived)
		require.Empty(t, rec.executions(), "executions of the spare delivery")
		got := e.schedule(t, s.ID)
		require.Equal(t, store.StatusFailed, got.LastStatus, "last status")
		require.Equal(t, "the last attempt timed out or its worker stopped", got.LastError, "last error")
		require.Equal(t, int64(1), got.ConsecutiveFailures, "consecutive failures")
		require.Equal(t, float64(1), testutil.ToFloat64(m.TasksDropped.WithLabelValues("retries_exhausted")), "dropped tasks metric")
	})
}

func TestStatusOf(t *testing.T) {
	rdb := redistest.Start(t).Client()
	e := newWorkerEnv(t, rdb)
	w := e.newTestWorker(t, metrics.NewUnregistered())
	ctx := context.Background()
	failure := errors.New("boom")

	cases := []struct {
		name     string
		err      error
		attempt  int
		maxRetry int
		want     store.ExecutionStatus
	}{
		{"nil error succeeded", nil, 0, 3, store.StatusSucceeded},
		{"nil error on last attempt succeeded", nil, 3, 3, store.StatusSucceeded},
		{"error with retries left retrying", failure, 0, 3, store.StatusRetrying},
		{"error before last attempt retrying", failure, 2, 3, store.StatusRetrying},
		{"error on last attempt failed", failure, 3, 3, store.StatusFailed},
		{"error without retries failed", failure, 0, 0, store.StatusFailed},
		{"permanent error failed", Permanent(failure), 0, 3, store.StatusFailed},
		{"wrapped permanent error failed", fmt.Errorf("call: %w", Permanent(failure)), 0, 3, store.StatusFailed},
		{"deadline with retries left retrying", context.DeadlineExceeded, 0, 3, store.StatusRetrying},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, w.statusOf(ctx, tc.err, tc.attempt, tc.maxRetry))
		})
	}

	t.Run("canceled without stop retrying", func(t *testing.T) {
		canceled, cancel := context.WithCancel(context.Background())
		cancel()
		require.Equal(t, store.StatusRetrying, w.statusOf(canceled, context.Canceled, 0, 3))
	})

	t.Run("canceled by stopping worker interrupted", func(t *testing.T) {
		stopping := e.newTestWorker(t, metrics.NewUnregistered())
		stopping.cancelBase()
		canceled, cancel := context.WithCancel(context.Background())
		cancel()

		require.Equal(t, store.StatusInterrupted, stopping.statusOf(canceled, context.Canceled, 3, 3))
	})

	t.Run("stopping worker with live context", func(t *testing.T) {
		stopping := e.newTestWorker(t, metrics.NewUnregistered())
		stopping.cancelBase()

		require.Equal(t, store.StatusFailed, stopping.statusOf(ctx, failure, 3, 3))
	})
}
