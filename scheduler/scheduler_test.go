package scheduler_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/internal/metrics"
	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/internal/task"
	"github.com/pulse-sched/pulse/scheduler"
	"github.com/pulse-sched/pulse/store"
)

// waitFor is the deadline of every wait in these tests.
const waitFor = 10 * time.Second

var prefixCounter atomic.Int64

// discardLogger returns a logger that writes nothing.
func discardLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testContext returns a context that ends with the test or after 30s.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newTestStore returns an initialized store on rdb with a key prefix of its
// own, so the schedulers of different tests never see each other's
// schedules.
func newTestStore(t *testing.T, rdb *redis.Client) *store.Store {
	t.Helper()
	st, err := store.New(rdb, store.Config{Prefix: fmt.Sprintf("schedtest%d", prefixCounter.Add(1)), Partitions: 2})
	require.NoError(t, err)
	require.NoError(t, st.Init(testContext(t)))
	return st
}

// createSchedule creates a schedule with an interval of one hour, due at
// once, with the given options.
func createSchedule(t *testing.T, st *store.Store, o store.Options) *store.Schedule {
	t.Helper()
	s, err := st.CreateSchedule(testContext(t), store.NewSchedule{
		ID:             ulid.Make().String(),
		ATSCode:        "alpha",
		HandlerName:    "reports.daily",
		Interval:       time.Hour,
		RunImmediately: true,
		Options:        o,
	})
	require.NoError(t, err)
	return s
}

// backdate moves the grid of an active schedule as if no scheduler had run
// for a while, and returns its new next slot: missed intervals and half an
// interval before the Redis time. It writes the anchor ("an") and next slot
// ("nx") fields of the schedule hash directly.
func backdate(t *testing.T, st *store.Store, s *store.Schedule, missed int) time.Time {
	t.Helper()
	ctx := testContext(t)
	now, err := st.ServerTime(ctx)
	require.NoError(t, err)
	slot := now.Add(-time.Duration(missed)*s.Interval - s.Interval/2).Truncate(time.Millisecond)
	ms := strconv.FormatInt(slot.UnixMilli(), 10)

	keys := st.Keys()
	p := keys.PartitionOf(s.ID)
	require.NoError(t, st.Client().HSet(ctx, keys.ScheduleKey(p, s.ID), "an", ms, "nx", ms).Err())
	require.NoError(t, st.Client().ZAdd(ctx, keys.DueKey(p), redis.Z{Score: float64(slot.UnixMilli()), Member: s.ID}).Err())
	return slot
}

// runScheduler runs a scheduler on st until the test ends.
func runScheduler(t *testing.T, st *store.Store, cfg scheduler.Config, m *metrics.Metrics) {
	t.Helper()
	sch, err := scheduler.New(st, asynq.NewClientFromRedisClient(st.Client()), cfg, discardLogger(), m)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = sch.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// waitForTask waits until asynq contains the task of the slot and returns it.
func waitForTask(t *testing.T, rdb *redis.Client, queue string, ref store.SlotRef) *asynq.TaskInfo {
	t.Helper()
	inspector := asynq.NewInspectorFromRedisClient(rdb)
	var info *asynq.TaskInfo
	require.Eventually(t, func() bool {
		var err error
		info, err = inspector.GetTaskInfo(queue, ref.ExecutionID())
		return err == nil
	}, waitFor, 10*time.Millisecond, "no task for slot %s of schedule %s", ref.Slot, ref.ScheduleID)
	return info
}

// waitAcknowledged waits until no partition has a claimed slot that is not
// acknowledged.
func waitAcknowledged(t *testing.T, st *store.Store) {
	t.Helper()
	ctx := testContext(t)
	require.Eventually(t, func() bool {
		for p := range st.Keys().Partitions() {
			n, err := st.CountInflight(ctx, p)
			if err != nil || n > 0 {
				return false
			}
		}
		return true
	}, waitFor, 10*time.Millisecond, "inflight slots left")
}

func TestSchedulerEnqueue(t *testing.T) {
	rdb := redistest.Start(t).Client()
	cfg := scheduler.Config{PollInterval: 20 * time.Millisecond, TaskTimeout: 11 * time.Second, TaskRetention: 3 * time.Minute}

	t.Run("due slot becomes task", func(t *testing.T) {
		st := newTestStore(t, rdb)
		s := createSchedule(t, st, store.Options{Timeout: 7 * time.Second, MaxRetry: 2})
		ref := store.SlotRef{ScheduleID: s.ID, Slot: s.NextRunAt, Generation: s.Generation}
		runScheduler(t, st, cfg, metrics.NewUnregistered())

		info := waitForTask(t, rdb, scheduler.QueueDefault, ref)

		require.Equal(t, ref.ExecutionID(), info.ID, "task ID")
		require.Equal(t, "pulse", info.Queue, "queue")
		require.Equal(t, task.TypeSlot, info.Type, "type")
		require.Equal(t, 3, info.MaxRetry, "max retry")
		require.Equal(t, 7*time.Second+task.AsynqTimeoutGrace, info.Timeout, "timeout")
		require.Equal(t, 3*time.Minute, info.Retention, "retention")
		got, err := task.Decode(info.Payload)
		require.NoError(t, err)
		want := task.Slot{SlotRef: ref, Count: 1, Timeout: 7 * time.Second, MaxRetry: 2}
		require.Equal(t, want, got, "payload")
	})

	t.Run("enqueued slot acknowledged", func(t *testing.T) {
		st := newTestStore(t, rdb)
		s := createSchedule(t, st, store.Options{Timeout: 7 * time.Second})
		ref := store.SlotRef{ScheduleID: s.ID, Slot: s.NextRunAt, Generation: s.Generation}
		runScheduler(t, st, cfg, metrics.NewUnregistered())

		waitForTask(t, rdb, scheduler.QueueDefault, ref)

		waitAcknowledged(t, st)
		got, err := st.GetSchedule(testContext(t), s.ID, "")
		require.NoError(t, err)
		require.Equal(t, s.NextRunAt.Add(s.Interval), got.NextRunAt, "next slot")
	})

	t.Run("zero timeout uses TaskTimeout", func(t *testing.T) {
		st := newTestStore(t, rdb)
		s := createSchedule(t, st, store.Options{})
		ref := store.SlotRef{ScheduleID: s.ID, Slot: s.NextRunAt, Generation: s.Generation}
		runScheduler(t, st, cfg, metrics.NewUnregistered())

		info := waitForTask(t, rdb, scheduler.QueueDefault, ref)

		require.Equal(t, 11*time.Second+task.AsynqTimeoutGrace, info.Timeout, "timeout")
		require.Equal(t, 1, info.MaxRetry, "max retry")
		got, err := task.Decode(info.Payload)
		require.NoError(t, err)
		require.Equal(t, 11*time.Second, got.Timeout, "timeout in the payload")
	})

	t.Run("run_all range becomes one task", func(t *testing.T) {
		st := newTestStore(t, rdb)
		s := createSchedule(t, st, store.Options{
			Timeout: 7 * time.Second, MaxRetry: 1, Misfire: store.MisfireRunAll, MisfireWindow: 24 * time.Hour,
		})
		first := backdate(t, st, s, 3)
		ref := store.SlotRef{ScheduleID: s.ID, Slot: first, Generation: s.Generation}
		m := metrics.NewUnregistered()
		runScheduler(t, st, cfg, m)

		info := waitForTask(t, rdb, scheduler.QueueDefault, ref)

		require.Equal(t, 28*time.Second+task.AsynqTimeoutGrace, info.Timeout, "timeout of four slots")
		require.Equal(t, 2, info.MaxRetry, "max retry")
		got, err := task.Decode(info.Payload)
		require.NoError(t, err)
		want := task.Slot{SlotRef: ref, Count: 4, Interval: time.Hour, Timeout: 7 * time.Second, MaxRetry: 1}
		require.Equal(t, want, got, "payload")
		inspector := asynq.NewInspectorFromRedisClient(rdb)
		for _, later := range got.Slots()[1:] {
			_, err := inspector.GetTaskInfo(scheduler.QueueDefault, later.ExecutionID())
			require.ErrorIs(t, err, asynq.ErrTaskNotFound, "task of slot %s", later.Slot)
		}
		require.Eventually(t, func() bool { return testutil.ToFloat64(m.SlotsDispatched) == 4 }, waitFor, 10*time.Millisecond, "dispatched slots")
	})

	t.Run("run_latest skips counted in metric", func(t *testing.T) {
		st := newTestStore(t, rdb)
		s := createSchedule(t, st, store.Options{Timeout: 7 * time.Second})
		first := backdate(t, st, s, 3)
		latest := store.SlotRef{ScheduleID: s.ID, Slot: first.Add(3 * s.Interval), Generation: s.Generation}
		m := metrics.NewUnregistered()
		runScheduler(t, st, cfg, m)

		waitForTask(t, rdb, scheduler.QueueDefault, latest)

		require.Equal(t, float64(3), testutil.ToFloat64(m.SlotsSkipped.WithLabelValues(metrics.SkipMisfire)), "skipped slots")
	})

	t.Run("configured queue used", func(t *testing.T) {
		st := newTestStore(t, rdb)
		s := createSchedule(t, st, store.Options{Timeout: 7 * time.Second})
		ref := store.SlotRef{ScheduleID: s.ID, Slot: s.NextRunAt, Generation: s.Generation}
		own := cfg
		own.Queue = "pulse-other"
		runScheduler(t, st, own, metrics.NewUnregistered())

		info := waitForTask(t, rdb, "pulse-other", ref)

		require.Equal(t, "pulse-other", info.Queue)
	})

	t.Run("expired claim enqueued by reclaim", func(t *testing.T) {
		st := newTestStore(t, rdb)
		s := createSchedule(t, st, store.Options{Timeout: 7 * time.Second})
		ref := store.SlotRef{ScheduleID: s.ID, Slot: s.NextRunAt, Generation: s.Generation}
		// A scheduler that died after its claim leaves the slot in flight.
		p := st.Keys().PartitionOf(s.ID)
		c, err := st.ClaimDue(testContext(t), p, 10, time.Second)
		require.NoError(t, err)
		require.Len(t, c.Slots, 1)
		fast := cfg
		fast.ClaimLease = time.Second
		fast.ReclaimInterval = 50 * time.Millisecond
		m := metrics.NewUnregistered()
		runScheduler(t, st, fast, m)

		info := waitForTask(t, rdb, scheduler.QueueDefault, ref)

		require.Equal(t, ref.ExecutionID(), info.ID, "task ID")
		waitAcknowledged(t, st)
		require.Equal(t, float64(1), testutil.ToFloat64(m.SlotsReclaimed), "reclaimed slots")
	})

	t.Run("existing task counts as enqueued", func(t *testing.T) {
		st := newTestStore(t, rdb)
		s := createSchedule(t, st, store.Options{Timeout: 7 * time.Second})
		ref := store.SlotRef{ScheduleID: s.ID, Slot: s.NextRunAt, Generation: s.Generation}
		// The task of the slot is already in asynq, as after an enqueue
		// whose acknowledgement was lost.
		_, err := asynq.NewClientFromRedisClient(rdb).EnqueueContext(testContext(t),
			asynq.NewTask(task.TypeSlot, []byte("first"), asynq.TaskID(ref.ExecutionID()), asynq.Queue(scheduler.QueueDefault)))
		require.NoError(t, err)
		runScheduler(t, st, cfg, metrics.NewUnregistered())

		ctx := testContext(t)
		require.Eventually(t, func() bool {
			got, err := st.GetSchedule(ctx, s.ID, "")
			return err == nil && got.NextRunAt.After(s.NextRunAt)
		}, waitFor, 10*time.Millisecond, "slot not claimed")
		waitAcknowledged(t, st)
		info := waitForTask(t, rdb, scheduler.QueueDefault, ref)
		require.Equal(t, []byte("first"), info.Payload, "payload of the task")
	})
}

func TestMonitorOverdue(t *testing.T) {
	rdb := redistest.Start(t).Client()
	st := newTestStore(t, rdb)
	m := metrics.NewUnregistered()
	late := createSchedule(t, st, store.Options{})
	backdate(t, st, late, 2)
	createSchedule(t, st, store.Options{})

	mon := scheduler.NewMonitor(st, 20*time.Millisecond, discardLogger(), m)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = mon.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	t.Run("overdue schedule counted", func(t *testing.T) {
		require.Eventually(t, func() bool { return testutil.ToFloat64(m.SchedulesOverdue) == 1 }, waitFor, 10*time.Millisecond)
	})

	t.Run("count drops after pause", func(t *testing.T) {
		_, err := st.PauseSchedule(testContext(t), late.ID, "")
		require.NoError(t, err)

		require.Eventually(t, func() bool { return testutil.ToFloat64(m.SchedulesOverdue) == 0 }, waitFor, 10*time.Millisecond)
	})
}

func TestSchedulerConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  scheduler.Config
		want string
	}{
		{"poll interval below 1ms", scheduler.Config{PollInterval: 500 * time.Microsecond}, "poll interval 500µs is too short"},
		{"claim batch negative", scheduler.Config{ClaimBatch: -1}, "claim batch -1 is out of range"},
		{"claim batch above limit", scheduler.Config{ClaimBatch: 10001}, "claim batch 10001 is out of range"},
		{"claim lease below 1s", scheduler.Config{ClaimLease: 500 * time.Millisecond}, "claim lease 500ms is too short"},
		{"reclaim interval below 10ms", scheduler.Config{ReclaimInterval: 5 * time.Millisecond}, "reclaim interval 5ms is too short"},
		{"enqueue concurrency negative", scheduler.Config{EnqueueConcurrency: -1}, "enqueue concurrency -1 is invalid"},
		{"task timeout below 1s", scheduler.Config{TaskTimeout: 500 * time.Millisecond}, "task timeout 500ms is too short"},
		{"task retention below default bound", scheduler.Config{TaskRetention: 21 * time.Second}, "task retention 21s is too short"},
		{"task retention below lease bound", scheduler.Config{ClaimLease: time.Minute, TaskRetention: 2 * time.Minute}, "at least twice the claim lease plus the reclaim interval (2m2s)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := scheduler.New(nil, nil, tc.cfg, discardLogger(), metrics.NewUnregistered())
			require.ErrorContains(t, err, tc.want)
			require.ErrorContains(t, err, "scheduler config")
		})
	}

	t.Run("defaults accepted", func(t *testing.T) {
		_, err := scheduler.New(nil, nil, scheduler.Config{}, discardLogger(), metrics.NewUnregistered())
		require.NoError(t, err)
	})

	t.Run("retention at its bound accepted", func(t *testing.T) {
		_, err := scheduler.New(nil, nil, scheduler.Config{TaskRetention: 22 * time.Second}, discardLogger(), metrics.NewUnregistered())
		require.NoError(t, err)
	})
}
