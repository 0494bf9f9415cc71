//go:build faults

package faults

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/internal/proctest"
	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/proto/protocolpb"
)

// TestCreateDeleteMemoryFlat runs two rounds of a thousand create and delete
// cycles with a 2s retention: once the retention has passed, Redis holds as
// many keys as before the round and its memory does not grow.
func TestCreateDeleteMemoryFlat(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{APIEnv: map[string]string{
		"PULSE_DELETED_RETENTION": "2s", "PULSE_OVERDUE_CHECK_INTERVAL": "1s",
	}})
	round := func(n int) {
		for range n {
			id, _ := e.create(&protocolpb.CreateScheduleRequest{IntervalSeconds: 3600, Payload: []byte(strings.Repeat("x", 200))})
			e.delete(id)
		}
	}
	settle := func() (keys, memory int64) {
		t.Helper()
		// Deleted records expire through their TTL; the monitor forgets
		// them in the deleted index.
		waitFor(t, 60*time.Second, "the deleted records to expire", func() bool {
			n, err := e.rdb.DBSize(e.ctx()).Result()
			require.NoError(t, err)
			require.NoError(t, err)
			deleted := int64(0)
			for p := range e.store.Keys().Partitions() {
				c, err := e.rdb.ZCard(e.ctx(), e.store.Keys().DeletedKey(p)).Result()
				require.NoError(t, err)
				deleted += c
			}
			return n > 0 && deleted == 0 && e.countRecords() == 0
		})
		keys, err := e.rdb.DBSize(e.ctx()).Result()
		require.NoError(t, err)
		return keys, usedMemory(t, e)
	}

	round(100)
	keys0, _ := settle()
	round(1000)
	keys1, memory1 := settle()
	round(1000)
	keys2, memory2 := settle()

	t.Logf("keys after warm-up %d, after rounds %d and %d; used_memory after rounds %d and %d bytes", keys0, keys1, keys2, memory1, memory2)
	require.Equal(t, keys1, keys2, "keys after the second round")
	require.Equal(t, keys0, keys1, "keys after the first round")
	require.LessOrEqual(t, memory2, memory1+64*1024, "used_memory grew by %d bytes over a thousand cycles", memory2-memory1)
}

// countRecords counts the schedule hashes and specs left in Redis.
func (e *env) countRecords() int {
	e.t.Helper()
	n := 0
	iter := e.rdb.Scan(e.ctx(), 0, "pulse:{p*}:s*:*", 1000).Iterator()
	for iter.Next(e.ctx()) {
		n++
	}
	require.NoError(e.t, iter.Err())
	return n
}

func usedMemory(t *testing.T, e *env) int64 {
	t.Helper()
	info, err := e.rdb.Info(e.ctx(), "memory").Result()
	require.NoError(t, err)
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatal("INFO memory has no used_memory")
	return 0
}

// TestTaskRetention checks that asynq keeps a slot's completed task, and so
// its task ID, for the scheduler's task retention of 5 minutes, longer than
// any claim lease plus reclaim interval after which the slot could be
// enqueued again.
func TestTaskRetention(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.scheduler("scheduler-1", nil)
	e.worker("worker-1", nil)
	id, _ := e.create(&protocolpb.CreateScheduleRequest{IntervalSeconds: 1})
	waitFor(t, 10*time.Second, "a run", func() bool {
		for _, r := range e.runs()[id] {
			if r.status == "succeeded" {
				return true
			}
		}
		return false
	})
	r := e.runs()[id][0]

	inspector := asynq.NewInspectorFromRedisClient(e.rdb)
	waitFor(t, 5*time.Second, "the task to complete", func() bool {
		info, err := inspector.GetTaskInfo("pulse", r.executionID)
		return err == nil && info.State == asynq.TaskStateCompleted
	})
	info, err := inspector.GetTaskInfo("pulse", r.executionID)
	require.NoError(t, err)
	require.Equal(t, 5*time.Minute, info.Retention, "retention of a completed slot task")
	e.pause(id)
}

// TestOverdueVisible runs no scheduler at all: every role's monitor reports
// the schedule as overdue in /metrics and in the log, and the report clears
// once a scheduler runs it again.
func TestOverdueVisible(t *testing.T) {
	t.Parallel()
	fast := map[string]string{"PULSE_OVERDUE_CHECK_INTERVAL": "1s"}
	e := newEnv(t, envOptions{APIEnv: fast})
	worker := e.worker("worker-1", fast)
	id, _ := e.create(&protocolpb.CreateScheduleRequest{IntervalSeconds: 1})

	waitFor(t, 15*time.Second, "the API to report the overdue schedule", func() bool {
		return metricValue(t, e.api, "pulse_schedules_overdue", nil) == 1
	})
	waitFor(t, 5*time.Second, "the worker to report the overdue schedule", func() bool {
		return metricValue(t, worker, "pulse_schedules_overdue", nil) == 1
	})
	line := e.api.WaitLog(t, 5*time.Second, "the overdue warning", proctest.MsgIs(
		"schedules are overdue: their next slot is more than one interval in the past; check that a scheduler runs"))
	require.Contains(t, line.Text, id, "the warning names the schedule")

	e.scheduler("scheduler-1", fast)
	waitFor(t, 15*time.Second, "the overdue report to clear", func() bool {
		return metricValue(t, e.api, "pulse_schedules_overdue", nil) == 0
	})
	e.pause(id)
}

// TestEvictionPolicyRejected starts a scheduler on a Redis that may evict
// keys: it refuses to start with a message naming the policy, unless
// --allow-eviction is set.
func TestEvictionPolicyRejected(t *testing.T) {
	t.Parallel()
	srv := redistest.StartWithOptions(t, redistest.Options{Args: []string{"--maxmemory-policy", "allkeys-lru"}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cmd := exec.CommandContext(ctx, proctest.Binary(t), "scheduler", "--redis-url", srv.URL(), "--http-addr", "")
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	require.ErrorAs(t, err, &exitErr, "the scheduler started on a Redis that may evict keys:\n%s", out)
	require.Equal(t, 1, exitErr.ExitCode())
	require.Contains(t, string(out), `maxmemory-policy "allkeys-lru"`)
	require.Contains(t, string(out), "--allow-eviction")

	allowed := proctest.Start(t, proctest.Options{
		Name: "scheduler-allowed", Args: []string{"scheduler", "--allow-eviction"}, RedisURL: srv.URL(),
	})
	allowed.WaitReady(t, 30*time.Second)
	allowed.WaitLog(t, 5*time.Second, "the eviction warning", proctest.MsgIs(
		"Redis may evict keys and so lose schedules; starting anyway because of --allow-eviction"))
}
