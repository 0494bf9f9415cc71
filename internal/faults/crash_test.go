//go:build faults

package faults

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/internal/proctest"
	"github.com/pulse-sched/pulse/proto/protocolpb"
)

// takeover is the longest a claimed slot waits after its scheduler died
// before another one enqueues it: the default claim lease (10s) plus the
// reclaim interval (1s).
const takeover = 11 * time.Second

// TestSchedulersKilled kills two of three schedulers halfway through and
// checks that every slot still ran once and no schedule paused for longer
// than one interval plus the takeover time.
func TestSchedulersKilled(t *testing.T) {
	t.Parallel()
	const interval = 2 * time.Second
	e := newEnv(t, envOptions{})
	schedulers := []*proctest.Process{e.scheduler("scheduler-1", nil), e.scheduler("scheduler-2", nil), e.scheduler("scheduler-3", nil)}
	e.worker("worker-1", nil)
	e.worker("worker-2", nil)

	anchors := map[string]time.Time{}
	for range 20 {
		id, anchor := e.create(&protocolpb.CreateScheduleRequest{IntervalSeconds: 2})
		anchors[id] = anchor
	}

	time.Sleep(10 * time.Second)
	schedulers[0].Kill(t)
	schedulers[1].Kill(t)
	time.Sleep(10 * time.Second)
	end := e.redisNow()
	for id := range anchors {
		e.pause(id)
	}

	// Slots due 2s before the end must have started; give their records a
	// moment to reach the logs.
	last := func(anchor time.Time) time.Time {
		return gridSlotAtOrAfter(anchor, interval, end.Add(-2*time.Second)).Add(-interval)
	}
	waitFor(t, 10*time.Second, "the records of every due slot", func() bool {
		runs := e.runs()
		for id, anchor := range anchors {
			first := firstAttempts(runs[id])
			if len(first) == 0 || first[len(first)-1].slot.Before(last(anchor)) {
				return false
			}
		}
		return true
	})

	runs := e.runs()
	for id, anchor := range anchors {
		requireOncePerSlot(t, id, runs[id], anchor, interval)
		requireNoGap(t, id, runs[id], anchor.Add(interval), last(anchor), interval)
		first := firstAttempts(runs[id])
		for i := 1; i < len(first); i++ {
			gap := first[i].startedAt.Sub(first[i-1].startedAt)
			require.LessOrEqual(t, gap, interval+takeover, "schedule %s: %s between the starts of slots %s and %s",
				id, gap, first[i-1].slot, first[i].slot)
		}
	}
	require.False(t, schedulers[2].Exited(), "the surviving scheduler exited")
}

// TestSchedulerStoppedPastLease freezes a scheduler between claim and
// enqueue for longer than its claim lease, lets another scheduler take the
// claimed slots over, then thaws it: no slot runs twice.
func TestSchedulerStoppedPastLease(t *testing.T) {
	t.Parallel()
	const interval = 2 * time.Second
	lease := map[string]string{"PULSE_CLAIM_LEASE": "2s"}
	e := newEnv(t, envOptions{})
	frozen := e.scheduler("scheduler-frozen", map[string]string{"PULSE_CLAIM_LEASE": "2s", "PULSE_FAILPOINT": "stop-after-claim"})
	e.worker("worker-1", nil)

	anchors := map[string]time.Time{}
	for range 5 {
		id, anchor := e.create(&protocolpb.CreateScheduleRequest{IntervalSeconds: 2})
		anchors[id] = anchor
	}
	frozen.WaitLog(t, 10*time.Second, "the failpoint stop", proctest.MsgIs("failpoint stop-after-claim: stopping before the enqueue"))
	waitFor(t, 5*time.Second, "the frozen scheduler to stop", func() bool { return processState(t, frozen.PID()) == "T" })
	stoppedAt := e.redisNow()
	claimed := inflightSlots(t, e)
	require.NotEmpty(t, claimed, "no claim in flight while the scheduler is frozen")

	// A second scheduler takes the frozen one's claims over once their lease
	// ends, and keeps the schedules running.
	other := e.scheduler("scheduler-2", lease)
	waitFor(t, 15*time.Second, "the takeover of the frozen claims", func() bool {
		return metricValue(t, other, "pulse_scheduler_slots_reclaimed_total", nil) >= 1
	})
	time.Sleep(3 * time.Second)
	frozen.Resume(t)
	// The thawed scheduler detects that it is stale either by its claim lease,
	// when it thaws before enqueuing, or by the fencing token of its
	// partition leases, which the other scheduler took over meanwhile.
	frozen.WaitLog(t, 10*time.Second, "the frozen scheduler to leave its stale claims alone", func(l proctest.Line) bool {
		return l.Msg() == "claim lease nearly over, leaving slot to the reclaim pass" ||
			l.Msg() == "partition lease taken by another scheduler, stopping its claims"
	})
	time.Sleep(5 * time.Second)
	end := e.redisNow()
	for id := range anchors {
		e.pause(id)
	}

	runs := e.runs()
	for id, anchor := range anchors {
		requireOncePerSlot(t, id, runs[id], anchor, interval)
		requireNoGap(t, id, runs[id], gridSlotAtOrAfter(anchor, interval, stoppedAt), end.Add(-2*time.Second), interval)
	}
	requireRan(t, runs, claimed)
	require.False(t, frozen.Exited(), "the thawed scheduler exited")
}

// TestSchedulerExitsAfterClaim kills a scheduler right after a claim,
// before the enqueue: the claimed slots still run, once each.
func TestSchedulerExitsAfterClaim(t *testing.T) {
	t.Parallel()
	const interval = 2 * time.Second
	e := newEnv(t, envOptions{})
	crashing := e.scheduler("scheduler-crash", map[string]string{"PULSE_FAILPOINT": "exit-after-claim"})
	e.worker("worker-1", nil)

	anchors := map[string]time.Time{}
	for range 3 {
		id, anchor := e.create(&protocolpb.CreateScheduleRequest{IntervalSeconds: 2})
		anchors[id] = anchor
	}
	require.Equal(t, 137, crashing.Wait(t, 15*time.Second), "exit code of the crashing scheduler")

	// The claim is recorded in flight, and nothing enqueued it.
	claimed := inflightSlots(t, e)
	require.NotEmpty(t, claimed, "no claim in flight after the crash")
	require.Empty(t, e.runs(), "a slot ran although its only scheduler died before the enqueue")

	other := e.scheduler("scheduler-2", nil)
	waitFor(t, 30*time.Second, "the claimed slots to run", func() bool {
		return ranAll(e.runs(), claimed)
	})
	require.GreaterOrEqual(t, metricValue(t, other, "pulse_scheduler_slots_reclaimed_total", nil), float64(len(claimed)))

	time.Sleep(2 * interval)
	for id := range anchors {
		e.pause(id)
	}
	runs := e.runs()
	for id, anchor := range anchors {
		requireOncePerSlot(t, id, runs[id], anchor, interval)
	}
	requireRan(t, runs, claimed)
}

// inflightSlots returns the first slot of every claim in flight.
func inflightSlots(t *testing.T, e *env) []proctest.SlotKey {
	t.Helper()
	var claimed []proctest.SlotKey
	for p := range e.store.Keys().Partitions() {
		members, err := e.rdb.ZRange(e.ctx(), e.store.Keys().InflightKey(p), 0, -1).Result()
		require.NoError(t, err)
		for _, m := range members {
			var id string
			var slot, gen, count int64
			_, err := fmt.Sscanf(strings.ReplaceAll(m, "|", " "), "%s %d %d %d", &id, &slot, &gen, &count)
			require.NoError(t, err, "inflight member %q", m)
			claimed = append(claimed, proctest.SlotKey{ScheduleID: id, SlotMS: slot})
		}
	}
	return claimed
}

// ranAll reports whether every slot in keys has a run.
func ranAll(runs map[string][]run, keys []proctest.SlotKey) bool {
	for _, key := range keys {
		found := false
		for _, r := range runs[key.ScheduleID] {
			found = found || r.slot.UnixMilli() == key.SlotMS
		}
		if !found {
			return false
		}
	}
	return true
}

// requireRan fails unless every slot in keys has exactly one first attempt.
func requireRan(t *testing.T, runs map[string][]run, keys []proctest.SlotKey) {
	t.Helper()
	for _, key := range keys {
		count := 0
		for _, r := range firstAttempts(runs[key.ScheduleID]) {
			if r.slot.UnixMilli() == key.SlotMS {
				count++
			}
		}
		require.Equal(t, 1, count, "first attempts of claimed slot %s of schedule %s", time.UnixMilli(key.SlotMS).UTC(), key.ScheduleID)
	}
}

// TestWorkerKilledMidHandler kills the worker that runs a slow handler. asynq
// delivers the execution again once the dead worker's lease is recovered
// (after 60 to 120s with asynq v0.25.1); meanwhile the schedule's later
// slots and other schedules keep running on the other worker.
func TestWorkerKilledMidHandler(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.scheduler("scheduler-1", nil)
	workers := map[string]*proctest.Process{"worker-1": e.worker("worker-1", nil), "worker-2": e.worker("worker-2", nil)}

	slow, _ := e.create(&protocolpb.CreateScheduleRequest{
		HandlerName: "pulse.sleep", IntervalSeconds: 6, TimeoutSeconds: 5,
		Metadata: map[string]string{"duration": "4s"},
	})
	fast, fastAnchor := e.create(&protocolpb.CreateScheduleRequest{IntervalSeconds: 1})

	var victim run
	waitFor(t, 15*time.Second, "the slow handler to start", func() bool {
		for _, r := range e.runs()[slow] {
			victim = r
			return true
		}
		return false
	})
	killed := workers[victim.worker]
	killed.Kill(t)
	killedAt := e.redisNow()
	survivor := workers["worker-1"]
	if victim.worker == "worker-1" {
		survivor = workers["worker-2"]
	}

	// Later slots run on the surviving worker once the running marker of
	// the dead execution ends (its timeout plus 10s).
	waitFor(t, 40*time.Second, "a later slot of the slow schedule on the surviving worker", func() bool {
		for _, r := range e.runs()[slow] {
			if r.worker == survivor.Name() && r.slot.After(victim.slot) && r.status == "succeeded" {
				return true
			}
		}
		return false
	})

	// asynq delivers the killed execution again: it runs, or is dropped
	// because a later slot already ran, which the worker logs.
	waitFor(t, 150*time.Second, "a new delivery of the killed execution", func() bool {
		for _, l := range survivor.Lines() {
			if l.String("schedule_id") != slow || l.String("slot") != victim.slot.Format(time.RFC3339Nano) {
				continue
			}
			if attempt, _ := l.Fields["attempt"].(float64); attempt >= 1 {
				return true
			}
		}
		return false
	})
	inspector := asynq.NewInspectorFromRedisClient(e.rdb)
	info, err := inspector.GetTaskInfo("pulse", victim.executionID)
	require.NoError(t, err)
	require.Contains(t, []asynq.TaskState{asynq.TaskStateCompleted, asynq.TaskStateRetry, asynq.TaskStateArchived}, info.State,
		"state of the killed execution's task")

	end := e.redisNow()
	e.pause(fast)
	e.pause(slow)
	runs := e.runs()
	requireOncePerSlot(t, fast, runs[fast], fastAnchor, time.Second)
	requireNoGap(t, fast, runs[fast], gridSlotAtOrAfter(fastAnchor, time.Second, killedAt.Add(time.Second)), end.Add(-2*time.Second), time.Second)
	require.False(t, survivor.Exited(), "the surviving worker exited")
}

// processState returns the state letter of a process from /proc, such as
// "S" (sleeping) or "T" (stopped).
func processState(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(t, err)
	// The command name in parentheses may contain spaces; the state follows
	// the closing parenthesis.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	require.Positive(t, i, "malformed /proc/%d/stat", pid)
	return strings.Fields(s[i+1:])[0]
}
