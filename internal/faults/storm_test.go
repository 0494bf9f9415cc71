//go:build faults

package faults

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/proto/protocolpb"
	"github.com/pulse-sched/pulse/store"
)

// TestStateStorm has four clients pause, resume and delete six schedules at
// random for 10s while a sampler checks the invariant after every change:
// an active schedule has exactly one entry in the due set, a paused or
// deleted one has none. Then the surviving schedules run for 10s with no
// slot run twice, and no deleted schedule runs after its delete.
func TestStateStorm(t *testing.T) {
	t.Parallel()
	const (
		interval = time.Second
		storm    = 10 * time.Second
	)
	e := newEnv(t, envOptions{})
	e.scheduler("scheduler-1", nil)
	e.worker("worker-1", nil)

	ids := make([]string, 6)
	anchors := map[string]time.Time{}
	for i := range ids {
		id, anchor := e.create(&protocolpb.CreateScheduleRequest{IntervalSeconds: 1})
		ids[i] = id
		anchors[id] = anchor
	}
	// Two schedules are deleted during the storm, at random times.
	deleteAt := map[string]time.Duration{
		ids[0]: time.Duration(rand.Int64N(int64(storm))),
		ids[1]: time.Duration(rand.Int64N(int64(storm))),
	}

	ctx, cancel := context.WithTimeout(context.Background(), storm)
	defer cancel()
	var (
		samples, violations atomic.Int64
		firstViolation      atomic.Value
		deletedAt           sync.Map // schedule ID -> Redis time of the acknowledged delete
		calls               atomic.Int64
		wg                  sync.WaitGroup
	)

	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			for _, id := range ids {
				if msg := checkInvariant(e, id); msg != "" {
					violations.Add(1)
					firstViolation.CompareAndSwap(nil, msg)
				}
				samples.Add(1)
			}
		}
	}()

	started := time.Now()
	client := e.client()
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), uint64(time.Now().UnixNano())))
			for ctx.Err() == nil {
				id := ids[rng.IntN(len(ids))]
				callCtx, callCancel := context.WithTimeout(context.Background(), 5*time.Second)
				var code string
				switch {
				case deleteAt[id] > 0 && time.Since(started) > deleteAt[id]:
					resp, err := client.DeleteSchedule(callCtx, &protocolpb.DeleteScheduleRequest{AuthToken: e.plugins.Token, ScheduleId: id})
					if err == nil && resp.GetSuccess() {
						now, _ := e.store.ServerTime(callCtx)
						deletedAt.LoadOrStore(id, now)
					}
					code = resp.GetErrorCode()
				case rng.IntN(2) == 0:
					resp, err := client.PauseSchedule(callCtx, &protocolpb.PauseScheduleRequest{AuthToken: e.plugins.Token, ScheduleId: id})
					if err == nil {
						code = resp.GetErrorCode()
					}
				default:
					resp, err := client.ResumeSchedule(callCtx, &protocolpb.ResumeScheduleRequest{AuthToken: e.plugins.Token, ScheduleId: id})
					if err == nil {
						code = resp.GetErrorCode()
					}
				}
				callCancel()
				// The only error a call may get is a pause or resume of a
				// deleted schedule.
				if code != "" && code != "FAILED_PRECONDITION" {
					firstViolation.CompareAndSwap(nil, "call failed with "+code)
					violations.Add(1)
				}
				calls.Add(1)
			}
		}()
	}
	wg.Wait()

	require.Zero(t, violations.Load(), "invariant violations in %d samples; first: %v", samples.Load(), firstViolation.Load())
	require.Greater(t, samples.Load(), int64(100), "samples")
	require.Greater(t, calls.Load(), int64(100), "calls")
	t.Logf("%d calls, %d invariant samples", calls.Load(), samples.Load())

	// Deleted schedules stay deleted; the others run normally again.
	for id := range deleteAt {
		if _, ok := deletedAt.Load(id); !ok {
			e.delete(id)
			now := e.redisNow()
			deletedAt.Store(id, now)
		}
		require.Equal(t, store.StateDeleted, e.get(id).State)
	}
	survivors := ids[2:]
	for _, id := range survivors {
		e.resume(id)
	}
	resumed := e.redisNow()
	time.Sleep(10 * time.Second)
	end := e.redisNow()
	for _, id := range survivors {
		e.pause(id)
	}

	runs := e.runs()
	for _, id := range ids {
		requireOncePerSlot(t, id, runs[id], anchors[id], interval)
	}
	for _, id := range survivors {
		requireNoGap(t, id, runs[id], gridSlotAtOrAfter(anchors[id], interval, resumed.Add(interval)), end.Add(-2*time.Second), interval)
	}
	deletedAt.Range(func(key, value any) bool {
		id, at := key.(string), value.(time.Time)
		require.Empty(t, runsStartedAfter(runs[id], at), "schedule %s ran after its delete", id)
		return true
	})
}

// checkInvariant reads a schedule's state and index entries in one MULTI
// and returns a description of what breaks the invariant, or "".
func checkInvariant(e *env, id string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	keys := e.store.Keys()
	p := keys.PartitionOf(id)
	var state *redis.StringCmd
	var due *redis.FloatCmd
	var paused *redis.BoolCmd
	_, err := e.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		state = pipe.HGet(ctx, keys.ScheduleKey(p, id), "st")
		due = pipe.ZScore(ctx, keys.DueKey(p), id)
		paused = pipe.SIsMember(ctx, keys.PausedKey(p), id)
		return nil
	})
	if err != nil && err != redis.Nil {
		return "read failed: " + err.Error()
	}
	inDue := due.Err() == nil
	switch state.Val() {
	case "active":
		if !inDue || paused.Val() {
			return id + " is active but not due or marked paused"
		}
	case "paused":
		if inDue || !paused.Val() {
			return id + " is paused but due or not marked paused"
		}
	case "deleted":
		if inDue || paused.Val() {
			return id + " is deleted but due or marked paused"
		}
	default:
		return id + " has state " + state.Val()
	}
	return ""
}
