package proctest_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/internal/proctest"
	"github.com/pulse-sched/pulse/internal/redistest"
)

// TestReplicasRunEachSlotOnce runs 50 schedules on 3 schedulers and 2
// workers for 20s and checks from the workers' logs that every due slot
// started exactly once, on its schedule's grid.
func TestReplicasRunEachSlotOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 6 pulse processes and runs for about 30s")
	}
	const (
		scheduleCount = 50
		interval      = 2 * time.Second
		runFor        = 20 * time.Second
		// edge is how long before the pause a slot must be due to be
		// required: a later slot may or may not run before the pause.
		edge = 2 * time.Second
	)

	redis := redistest.Start(t)
	plugins := proctest.WritePlugins(t, "replicas")
	start := func(name, role string) *proctest.Process {
		return proctest.Start(t, proctest.Options{
			Name: name, Args: []string{role}, RedisURL: redis.URL(), PluginsFile: plugins.Path,
		})
	}
	apiProcess := start("api", "api")
	var schedulers, workers []*proctest.Process
	for i := 1; i <= 3; i++ {
		schedulers = append(schedulers, start(fmt.Sprintf("scheduler-%d", i), "scheduler"))
	}
	for i := 1; i <= 2; i++ {
		workers = append(workers, start(fmt.Sprintf("worker-%d", i), "worker"))
	}
	for _, p := range slices.Concat([]*proctest.Process{apiProcess}, schedulers, workers) {
		p.WaitReady(t, 30*time.Second)
	}

	client := apiProcess.Client(t)
	type schedule struct {
		id        string
		createdAt time.Time
		// pausing is the time just before the pause call, paused the time
		// just after it returned.
		pausing, paused time.Time
	}
	schedules := make([]*schedule, scheduleCount)
	for i := range schedules {
		id, createdAt := createSchedule(t, client, plugins.Token, int32(interval/time.Second))
		schedules[i] = &schedule{id: id, createdAt: createdAt}
	}

	// The slots must fire by themselves for a while; nothing to wait for.
	time.Sleep(runFor)

	for _, s := range schedules {
		s.pausing = time.Now()
		pauseSchedule(t, client, plugins.Token, s.id)
		s.paused = time.Now()
	}

	// required returns the grid slots of s that were due edge before the
	// pause: every one of them must have started.
	required := func(s *schedule) []time.Time {
		var slots []time.Time
		for slot := s.createdAt.Add(interval); !slot.After(s.pausing.Add(-edge)); slot = slot.Add(interval) {
			slots = append(slots, slot)
		}
		return slots
	}
	// The last required slots were due at least edge ago, but their log
	// lines may still be on their way.
	allLogged := poll(10*time.Second, func() bool {
		starts := proctest.ExecutionStarts(t, workers...)
		for _, s := range schedules {
			for _, slot := range required(s) {
				if len(starts[proctest.KeyOf(s.id, slot)]) == 0 {
					return false
				}
			}
		}
		return true
	})
	if !allLogged {
		t.Log("some required slots have no execution record 10s after the pause")
	}
	starts := proctest.ExecutionStarts(t, workers...)

	var duplicates, missing, offGrid, afterPause []string
	requiredCount := 0
	byWorker := map[string]int{}
	for _, s := range schedules {
		for _, slot := range required(s) {
			requiredCount++
			if len(starts[proctest.KeyOf(s.id, slot)]) == 0 {
				missing = append(missing, fmt.Sprintf("%s@%s", s.id, slot.Format(time.RFC3339Nano)))
			}
		}
	}
	bySchedule := map[string]*schedule{}
	for _, s := range schedules {
		bySchedule[s.id] = s
	}
	for key, records := range starts {
		s, ok := bySchedule[key.ScheduleID]
		require.Truef(t, ok, "execution of unknown schedule %s", key.ScheduleID)
		slot := time.UnixMilli(key.SlotMS)

		firstAttempts := 0
		for _, r := range records {
			byWorker[r.Process]++
			if r.Attempt == 0 {
				firstAttempts++
			}
			if r.StartedAt.After(s.paused) {
				afterPause = append(afterPause, fmt.Sprintf("%s@%s started %s on %s, pause returned %s",
					s.id, slot.Format(time.RFC3339Nano), r.StartedAt.Format(time.RFC3339Nano), r.Process, s.paused.Format(time.RFC3339Nano)))
			}
		}
		if firstAttempts > 1 {
			duplicates = append(duplicates, fmt.Sprintf("%s@%s started %d times with attempt 0: %+v",
				s.id, slot.Format(time.RFC3339Nano), firstAttempts, records))
		}
		offset := slot.Sub(s.createdAt)
		if offset < interval || offset%interval != 0 {
			offGrid = append(offGrid, fmt.Sprintf("%s@%s is %s after created_at %s",
				s.id, slot.Format(time.RFC3339Nano), offset, s.createdAt.Format(time.RFC3339Nano)))
		}
	}

	dispatched := map[string]float64{}
	claimingSchedulers := 0
	for _, p := range schedulers {
		n := p.Metric(t, "pulse_scheduler_slots_dispatched_total")
		dispatched[p.Name()] = n
		if n > 0 {
			claimingSchedulers++
		}
	}
	t.Logf("slots started %d, required %d; executions by worker %v; slots dispatched by scheduler %v; duplicates %d, missing %d, off grid %d, after pause %d",
		len(starts), requiredCount, byWorker, dispatched, len(duplicates), len(missing), len(offGrid), len(afterPause))

	require.Empty(t, duplicates, "slots started more than once with attempt 0")
	require.Empty(t, missing, "slots due before the pause that never started")
	require.Empty(t, offGrid, "slots that are not on the schedule's grid")
	require.Empty(t, afterPause, "executions that started after the pause returned")
	for _, w := range workers {
		require.Positivef(t, byWorker[w.Name()], "%s ran no execution", w.Name())
	}
	require.GreaterOrEqualf(t, claimingSchedulers, 2, "schedulers that dispatched slots: %v", dispatched)
}
