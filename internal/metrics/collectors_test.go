package metrics

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/store"
)

func TestSchedulesCollectorCachesCounts(t *testing.T) {
	var calls atomic.Int64
	c := NewSchedulesCollector(func(context.Context) (store.StateCounts, error) {
		calls.Add(1)
		return store.StateCounts{Active: 3, Paused: 2, Deleted: 1}, nil
	}, nil)

	want := `
# HELP pulse_schedules Schedules by state: active, paused, or deleted and still readable. Counted over every partition at scrape time, so every process reports the same value.
# TYPE pulse_schedules gauge
pulse_schedules{state="active"} 3
pulse_schedules{state="deleted"} 1
pulse_schedules{state="paused"} 2
`
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(want)))
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(want)))
	require.Equal(t, int64(1), calls.Load(), "the second scrape within the TTL reuses the counts")

	c.ttl = 0
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(want)))
	require.Equal(t, int64(2), calls.Load(), "an expired cache reads again")
}

func TestSchedulesCollectorLeavesOutFailedRead(t *testing.T) {
	var failures []error
	c := NewSchedulesCollector(func(context.Context) (store.StateCounts, error) {
		return store.StateCounts{}, errors.New("redis down")
	}, func(err error) { failures = append(failures, err) })

	require.Equal(t, 0, testutil.CollectAndCount(c))
	require.Len(t, failures, 1)
	require.Equal(t, 0, testutil.CollectAndCount(c), "the failure is cached too")
	require.Len(t, failures, 1)
}

func TestQueueCollectorExportsAsynqQueues(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	_, err := asynq.NewClientFromRedisClient(rdb).Enqueue(asynq.NewTask("pulse:slot", nil), asynq.Queue("pulse"))
	require.NoError(t, err)

	ping := func(ctx context.Context) error { return rdb.Ping(ctx).Err() }
	c := NewQueueCollector(asynq.NewInspectorFromRedisClient(rdb), ping, nil)
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))

	want := `
# HELP asynq_tasks_enqueued_total Number of tasks enqueued; broken down by queue and state.
# TYPE asynq_tasks_enqueued_total gauge
asynq_tasks_enqueued_total{queue="pulse",state="active"} 0
asynq_tasks_enqueued_total{queue="pulse",state="archived"} 0
asynq_tasks_enqueued_total{queue="pulse",state="completed"} 0
asynq_tasks_enqueued_total{queue="pulse",state="pending"} 1
asynq_tasks_enqueued_total{queue="pulse",state="retry"} 0
asynq_tasks_enqueued_total{queue="pulse",state="scheduled"} 0
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want), "asynq_tasks_enqueued_total"))
}

func TestQueueCollectorLeavesOutUnreachableRedis(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	mr.Close()

	var failures int
	ping := func(ctx context.Context) error { return rdb.Ping(ctx).Err() }
	c := NewQueueCollector(asynq.NewInspectorFromRedisClient(rdb), ping, func(error) { failures++ })
	require.Equal(t, 0, testutil.CollectAndCount(c))
	require.Equal(t, 1, failures)
}

func TestNewPreinitializesKnownLabels(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := New(reg)
	m.RegisterAPI(reg)
	m.RegisterScheduler(reg)

	require.Equal(t, 2, testutil.CollectAndCount(m.SlotsSkipped))
	require.Equal(t, len(dropReasons), testutil.CollectAndCount(m.TasksDropped))
	require.Equal(t, 5, testutil.CollectAndCount(m.RedisErrors))
	require.Equal(t, 2, testutil.CollectAndCount(m.RegistryReloads))
	_, err := reg.Gather()
	require.NoError(t, err)
}
