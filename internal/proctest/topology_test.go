package proctest_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/internal/proctest"
	"github.com/pulse-sched/pulse/store"
)

// firingSchedule is a schedule that a topology test created, with the grid
// its slots lie on.
type firingSchedule struct {
	id        string
	createdAt time.Time
	interval  time.Duration
}

// topology runs an API, two schedulers and two workers of the real binary on
// one Redis URL, for the cluster and Sentinel tests.
type topology struct {
	api        *proctest.Process
	schedulers []*proctest.Process
	workers    []*proctest.Process
	token      string
	// created holds the schedules that createdRunAll made.
	created []firingSchedule
}

func startTopology(t *testing.T, redisURL string, env map[string]string) *topology {
	t.Helper()
	plugins := proctest.WritePlugins(t, "topology")
	start := func(name, role string) *proctest.Process {
		return proctest.Start(t, proctest.Options{
			Name: name, Args: []string{role}, RedisURL: redisURL, PluginsFile: plugins.Path, Env: env,
		})
	}
	top := &topology{api: start("api", "api"), token: plugins.Token}
	for i := 1; i <= 2; i++ {
		top.schedulers = append(top.schedulers, start(fmt.Sprintf("scheduler-%d", i), "scheduler"))
		top.workers = append(top.workers, start(fmt.Sprintf("worker-%d", i), "worker"))
	}
	for _, p := range top.all() {
		p.WaitReady(t, 30*time.Second)
	}
	return top
}

func (top *topology) all() []*proctest.Process {
	return slices.Concat([]*proctest.Process{top.api}, top.schedulers, top.workers)
}

// createSchedules creates n pulse.log schedules of a one-second interval.
func (top *topology) createSchedules(t *testing.T, n int) []firingSchedule {
	t.Helper()
	client := top.api.Client(t)
	out := make([]firingSchedule, n)
	for i := range out {
		id, createdAt := createSchedule(t, client, top.token, 1)
		out[i] = firingSchedule{id: id, createdAt: createdAt, interval: time.Second}
	}
	return out
}

// starts returns the execution start records of both workers.
func (top *topology) starts(t *testing.T) map[proctest.SlotKey][]proctest.ExecutionStart {
	t.Helper()
	return proctest.ExecutionStarts(t, top.workers...)
}

// requireEverySlotOnce checks that every grid slot of every schedule due
// between its first slot and until started exactly once with attempt 0, and
// that no slot off the grid started.
func requireEverySlotOnce(t *testing.T, top *topology, schedules []firingSchedule, until time.Time) {
	t.Helper()
	var missing, duplicates []string
	required := 0
	allLogged := poll(10*time.Second, func() bool {
		starts := top.starts(t)
		for _, s := range schedules {
			for slot := s.createdAt.Add(s.interval); !slot.After(until); slot = slot.Add(s.interval) {
				if len(starts[proctest.KeyOf(s.id, slot)]) == 0 {
					return false
				}
			}
		}
		return true
	})
	starts := top.starts(t)
	for _, s := range schedules {
		for slot := s.createdAt.Add(s.interval); !slot.After(until); slot = slot.Add(s.interval) {
			required++
			if firstAttempts(starts[proctest.KeyOf(s.id, slot)]) == 0 {
				missing = append(missing, fmt.Sprintf("%s@%s", s.id, slot.Format(time.RFC3339Nano)))
			}
		}
	}
	duplicates = duplicateSlots(starts)
	t.Logf("required slots %d, started slots %d, all logged %t", required, len(starts), allLogged)
	require.Emptyf(t, missing, "%d of %d required slots never started", len(missing), required)
	require.Empty(t, duplicates, "slots started more than once with attempt 0")
	requireOnGrid(t, schedules, starts)
}

// duplicateSlots lists the slots that started more than once with attempt 0.
func duplicateSlots(starts map[proctest.SlotKey][]proctest.ExecutionStart) []string {
	var out []string
	for key, records := range starts {
		if firstAttempts(records) > 1 {
			out = append(out, fmt.Sprintf("%s@%d: %+v", key.ScheduleID, key.SlotMS, records))
		}
	}
	return out
}

func firstAttempts(records []proctest.ExecutionStart) int {
	n := 0
	for _, r := range records {
		if r.Attempt == 0 {
			n++
		}
	}
	return n
}

func requireOnGrid(t *testing.T, schedules []firingSchedule, starts map[proctest.SlotKey][]proctest.ExecutionStart) {
	t.Helper()
	byID := map[string]firingSchedule{}
	for _, s := range schedules {
		byID[s.id] = s
	}
	var offGrid []string
	for key := range starts {
		s, ok := byID[key.ScheduleID]
		if !ok {
			continue
		}
		offset := time.UnixMilli(key.SlotMS).Sub(s.createdAt)
		if offset < s.interval || offset%s.interval != 0 {
			offGrid = append(offGrid, fmt.Sprintf("%s@%d is %s after its creation", key.ScheduleID, key.SlotMS, offset))
		}
	}
	require.Empty(t, offGrid, "slots off their schedule's grid")
}

// waitAllFireAfter waits until every schedule has started a slot later than
// after, and fails the test with the schedules that have not within timeout.
func waitAllFireAfter(t *testing.T, top *topology, schedules []firingSchedule, after time.Time, timeout time.Duration) {
	t.Helper()
	var silent []string
	ok := poll(timeout, func() bool {
		latest := map[string]int64{}
		for key := range top.starts(t) {
			latest[key.ScheduleID] = max(latest[key.ScheduleID], key.SlotMS)
		}
		silent = silent[:0]
		for _, s := range schedules {
			if latest[s.id] <= after.UnixMilli() {
				silent = append(silent, s.id)
			}
		}
		return len(silent) == 0
	})
	require.Truef(t, ok, "%d of %d schedules started no slot after %s within %s: %s",
		len(silent), len(schedules), after.Format(time.RFC3339Nano), timeout, strings.Join(silent, " "))
}

// partitionsOf returns the partitions of the schedules, with the default
// key prefix and partition count.
func partitionsOf(schedules []firingSchedule) map[int][]firingSchedule {
	keys := store.NewKeys(store.PrefixDefault, store.PartitionsDefault)
	out := map[int][]firingSchedule{}
	for _, s := range schedules {
		p := keys.PartitionOf(s.id)
		out[p] = append(out[p], s)
	}
	return out
}
