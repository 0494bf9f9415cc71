//go:build faults

package faults

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/proto/protocolpb"
	"github.com/pulse-sched/pulse/store"
)

// TestRedisRestartKeepsSchedules restarts Redis, with the AOF on, under a
// load of 200 schedules: every schedule survives on the same grid and fires
// again soon after Redis is back, and no Pulse process restarts.
func TestRedisRestartKeepsSchedules(t *testing.T) {
	t.Parallel()
	const (
		interval = 3 * time.Second
		count    = 200
		// reconnect bounds the time from Redis accepting connections again
		// to the next claim: the schedulers' retry backoff is at most 2s.
		reconnect = 3 * time.Second
	)
	e := newEnv(t, envOptions{AppendOnly: true})
	scheduler := e.scheduler("scheduler-1", nil)
	workers := []interface{ Exited() bool }{e.worker("worker-1", nil), e.worker("worker-2", nil)}

	before := map[string]*store.Schedule{}
	for range count {
		id, _ := e.create(&protocolpb.CreateScheduleRequest{IntervalSeconds: 3})
		before[id] = e.get(id)
	}
	time.Sleep(2 * interval)

	// SIGTERM makes Redis write its AOF before it exits; appendfsync
	// everysec would lose at most the last second of a hard crash.
	e.redis.Restart()
	back := e.redisNow()

	for id, old := range before {
		s := e.get(id)
		require.Equal(t, store.StateActive, s.State, "state of %s", id)
		require.Equal(t, old.Anchor, s.Anchor, "anchor of %s", id)
		require.Equal(t, old.Interval, s.Interval, "interval of %s", id)
		require.Zero(t, s.NextRunAt.Sub(s.Anchor)%interval, "next slot of %s is off the grid", id)
	}

	// Every schedule runs a slot that falls due after Redis is back, within
	// one interval plus the reconnection time.
	waitFor(t, interval+reconnect+5*time.Second, "a run of every schedule after the restart", func() bool {
		runs := e.runs()
		for id := range before {
			found := false
			for _, r := range firstAttempts(runs[id]) {
				found = found || !r.startedAt.Before(back)
			}
			if !found {
				return false
			}
		}
		return true
	})
	runs := e.runs()
	for id, old := range before {
		var firstAfter time.Time
		for _, r := range firstAttempts(runs[id]) {
			if !r.startedAt.Before(back) {
				firstAfter = r.startedAt
				break
			}
		}
		require.LessOrEqual(t, firstAfter.Sub(back), interval+reconnect, "schedule %s ran again only %s after Redis was back", id, firstAfter.Sub(back))
		requireOncePerSlot(t, id, runs[id], old.Anchor, interval)
	}

	require.False(t, scheduler.Exited(), "the scheduler exited")
	for _, w := range workers {
		require.False(t, w.Exited(), "a worker exited")
	}
	require.False(t, e.api.Exited(), "the API exited")
}
