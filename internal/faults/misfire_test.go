//go:build faults

package faults

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/store"
)

// TestSchedulersDownMisfire stops every scheduler for 60 intervals, then
// starts one: each misfire policy handles the missed slots as documented,
// the schedule continues on its grid, and every grid slot is either run or
// counted as skipped.
func TestSchedulersDownMisfire(t *testing.T) {
	t.Parallel()
	const (
		interval = 250 * time.Millisecond
		down     = 60 * interval
		window   = 2 * time.Second
	)
	e := newEnv(t, envOptions{})
	e.worker("worker-1", nil)

	policies := map[store.MisfirePolicy][]*store.Schedule{}
	for _, policy := range []store.MisfirePolicy{store.MisfireRunLatest, store.MisfireSkip, store.MisfireRunAll} {
		for range 3 {
			opts := store.Options{Misfire: policy, MaxRetry: 3}
			if policy == store.MisfireRunAll {
				opts.MisfireWindow = window
			}
			policies[policy] = append(policies[policy], e.createDirect(interval, opts))
		}
	}

	time.Sleep(down)
	require.Empty(t, e.runs(), "a slot ran while no scheduler ran")
	scheduler := e.scheduler("scheduler-1", nil)
	recovered := e.redisNow()
	time.Sleep(3 * time.Second)
	var ids []string
	for _, list := range policies {
		for _, s := range list {
			ids = append(ids, s.ID)
			e.pause(s.ID)
		}
	}
	runs := e.runs()

	var skippedTotal int64
	for policy, list := range policies {
		for _, s := range list {
			name := fmt.Sprintf("%s schedule %s", policy, s.ID)
			after := e.get(s.ID)
			skippedTotal += after.SkippedSlots
			first := firstAttempts(runs[s.ID])
			require.NotEmpty(t, first, "%s never ran after the recovery", name)
			requireOncePerSlot(t, s.ID, runs[s.ID], s.Anchor, interval)

			// Every grid slot from the first to the last one run is either
			// run or skipped, and nothing else is skipped.
			firstSlot := s.NextRunAt
			lastRun := first[len(first)-1].slot
			total := int64(lastRun.Sub(firstSlot)/interval) + 1
			require.Equal(t, total, int64(len(first))+after.SkippedSlots, "%s: runs plus skipped slots", name)

			// The slots after the catch-up follow one another on the grid.
			for i := 1; i < len(first); i++ {
				if first[i-1].slot.After(recovered) {
					require.Equal(t, first[i-1].slot.Add(interval), first[i].slot, "%s: slots after the recovery", name)
				}
			}

			switch policy {
			case store.MisfireRunLatest:
				require.False(t, first[0].slot.Before(recovered.Add(-interval)), "%s: first run %s is not the latest missed slot", name, first[0].slot)
				require.GreaterOrEqual(t, after.SkippedSlots, int64(down/interval)-2, "%s: skipped slots", name)
			case store.MisfireSkip:
				require.True(t, first[0].slot.After(recovered.Add(-interval)), "%s: a missed slot %s ran", name, first[0].slot)
			case store.MisfireRunAll:
				// Every missed slot within the window runs, oldest first.
				catchUp := int(window/interval) + 1
				require.GreaterOrEqual(t, len(first), catchUp, "%s: caught-up slots", name)
				require.True(t, first[0].slot.Before(recovered.Add(-window+interval)), "%s: first caught-up slot %s", name, first[0].slot)
				for i := 1; i < catchUp; i++ {
					require.Equal(t, first[i-1].slot.Add(interval), first[i].slot, "%s: caught-up slots in order", name)
					require.False(t, first[i].startedAt.Before(first[i-1].startedAt), "%s: caught-up slots started out of order", name)
				}
			}
		}
	}
	require.Equal(t, float64(skippedTotal), metricValue(t, scheduler, "pulse_slots_skipped_total", map[string]string{"reason": "misfire"}),
		"misfire skips counted by the scheduler")
	require.Len(t, ids, 9)
}

// TestLongPauseNoBurst pauses a schedule for 300 intervals: after the resume
// it runs from the first grid slot after the resume, one slot per interval,
// with no burst of the slots missed while paused.
func TestLongPauseNoBurst(t *testing.T) {
	t.Parallel()
	const interval = 100 * time.Millisecond
	e := newEnv(t, envOptions{})
	// A partition with nothing due is polled every --poll-interval (200ms by
	// default), which would make the first slot after the resume a misfire
	// at this 100ms interval; 20ms keeps the poll well inside one interval.
	e.scheduler("scheduler-1", map[string]string{"PULSE_POLL_INTERVAL": "20ms"})
	e.worker("worker-1", nil)
	s := e.createDirect(interval, store.Options{MaxRetry: 3})
	waitFor(t, 10*time.Second, "a few runs", func() bool { return len(e.runs()[s.ID]) >= 5 })

	e.pause(s.ID)
	paused := e.redisNow()
	skippedBefore := e.get(s.ID).SkippedSlots
	time.Sleep(300 * interval)
	require.Empty(t, runsStartedAfter(e.runs()[s.ID], paused), "a slot ran while paused")

	resuming := e.redisNow()
	e.resume(s.ID)
	next := e.get(s.ID).NextRunAt
	require.Equal(t, gridSlotAtOrAfter(s.Anchor, interval, resuming.Add(time.Millisecond)), next, "next slot after the resume")
	time.Sleep(2 * time.Second)
	e.pause(s.ID)

	after := runsStartedAfter(e.runs()[s.ID], paused)
	require.NotEmpty(t, after, "no run after the resume")
	require.Equal(t, next, after[0].slot, "first slot after the resume")
	// A slot may be skipped as a misfire when a run starts more than one
	// 100ms interval late, but slots never go back or repeat.
	for i := 1; i < len(after); i++ {
		require.True(t, after[i].slot.After(after[i-1].slot), "slot %s ran after slot %s", after[i].slot, after[i-1].slot)
	}
	// No burst: slots run no faster than the grid.
	require.LessOrEqual(t, len(after), int(2*time.Second/interval)+2, "runs in the 2s after the resume")
	// Misfires after the resume may add skipped slots, but the slots of the
	// pause itself are not counted.
	require.LessOrEqual(t, e.get(s.ID).SkippedSlots-skippedBefore, int64(2*time.Second/interval)-int64(len(after))+1,
		"slots of a paused schedule are counted as skipped")
	requireOncePerSlot(t, s.ID, e.runs()[s.ID], s.Anchor, interval)
}

// runsStartedAfter returns the runs that started after t.
func runsStartedAfter(runs []run, t time.Time) []run {
	var out []run
	for _, r := range runs {
		if r.startedAt.After(t) {
			out = append(out, r)
		}
	}
	return out
}
