package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/pulse-sched/pulse/store"
)

// The schedule record of every scenario: a 200-byte payload and 5 metadata
// entries, as the memory target is stated for.
const (
	payloadBytes  = 200
	metadataCount = 5
	benchHandler  = "pulse.log"
	benchOwner    = "bench"
	benchSource   = "127.0.0.1:7600"
)

// asynqQueue is the asynq queue of Pulse's slot tasks, and asynqPrefix the
// start of its keys (asynq v0.25.1 layout: asynq:{<queue>}:...).
const (
	asynqQueue  = "pulse"
	asynqPrefix = "asynq:{" + asynqQueue + "}:"
)

func benchPayload() []byte {
	p := make([]byte, payloadBytes)
	for i := range p {
		p[i] = byte('a' + i%26)
	}
	return p
}

func benchMetadata() map[string]string {
	m := map[string]string{}
	for i := 0; i < metadataCount; i++ {
		m[fmt.Sprintf("key%d", i)] = fmt.Sprintf("value-%d", i)
	}
	return m
}

// benchMetadataJSON is the metadata as the API stores it: a JSON object with
// sorted keys, which encoding/json produces for a map.
func benchMetadataJSON() string {
	b, _ := json.Marshal(benchMetadata())
	return string(b)
}

// createSchedules creates n active schedules through the store with 64
// concurrent callers and returns their IDs.
func createSchedules(ctx context.Context, st *store.Store, n int, interval time.Duration) ([]string, error) {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = ulid.Make().String()
	}
	payload, metadata := benchPayload(), benchMetadataJSON()
	var next atomic.Int64
	g, ctx := errgroup.WithContext(ctx)
	for w := 0; w < 64; w++ {
		g.Go(func() error {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return nil
				}
				_, err := st.CreateSchedule(ctx, store.NewSchedule{
					ID: ids[i], ATSCode: benchOwner, HandlerName: benchHandler, SourceURL: benchSource,
					Interval: interval, Payload: payload, MetadataJSON: metadata,
				})
				if err != nil {
					return err
				}
			}
		})
	}
	return ids, g.Wait()
}

// dueMembers returns the IDs in every partition's due set.
func dueMembers(ctx context.Context, e *env) ([][]string, error) {
	keys := e.store.Keys()
	out := make([][]string, keys.Partitions())
	for p := range out {
		members, err := e.rdb.ZRange(ctx, keys.DueKey(p), 0, -1).Result()
		if err != nil {
			return nil, err
		}
		out[p] = members
	}
	return out, nil
}

// setDue moves the next slot of schedules: the i-th schedule over all
// partitions gets the slot score(i). The claim script claims the latest slot
// of a schedule's grid, so setDue rewrites the grid anchor and the next slot
// of the schedule hash along with the due score. The hash fields are "an"
// and "nx" (see the field constants in store/schedule.go).
func setDue(ctx context.Context, e *env, members [][]string, score func(i int) time.Time) error {
	keys := e.store.Keys()
	i := 0
	for p, ids := range members {
		for start := 0; start < len(ids); start += 2000 {
			end := min(start+2000, len(ids))
			z := make([]redis.Z, 0, end-start)
			_, err := e.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
				for _, id := range ids[start:end] {
					ms := score(i).UnixMilli()
					pipe.HSet(ctx, keys.ScheduleKey(p, id), "an", ms, "nx", ms)
					z = append(z, redis.Z{Score: float64(ms), Member: id})
					i++
				}
				pipe.ZAddXX(ctx, keys.DueKey(p), z...)
				return nil
			})
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// taskTiming is one slot task in asynq: its slot and the local time of its
// enqueue.
type taskTiming struct {
	slot, enqueued time.Time
}

// lateness returns the time from the slot to the enqueue.
func (t taskTiming) lateness() time.Duration { return t.enqueued.Sub(t.slot) }

// pendingTasks reads every pending slot task of asynq. The slot is the time of
// the task ID, a ULID of the slot (store.SlotRef.ExecutionID), and the
// enqueue time is asynq's pending_since, the enqueuing process's clock in
// Unix nanoseconds.
func pendingTasks(ctx context.Context, e *env) ([]taskTiming, error) {
	ids, err := e.rdb.LRange(ctx, asynqPrefix+"pending", 0, -1).Result()
	if err != nil {
		return nil, err
	}
	out := make([]taskTiming, 0, len(ids))
	for start := 0; start < len(ids); start += 5000 {
		batch := ids[start:min(start+5000, len(ids))]
		cmds := make([]*redis.StringCmd, len(batch))
		_, err := e.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range batch {
				cmds[i] = p.HGet(ctx, asynqPrefix+"t:"+id, "pending_since")
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		for i, id := range batch {
			u, err := ulid.ParseStrict(id)
			if err != nil {
				return nil, fmt.Errorf("task ID %q is not a ULID: %w", id, err)
			}
			ns, err := strconv.ParseInt(cmds[i].Val(), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("pending_since of task %s: %w", id, err)
			}
			out = append(out, taskTiming{slot: ulid.Time(u.Time()), enqueued: time.Unix(0, ns)})
		}
	}
	return out, nil
}

// pendingCount returns the length of asynq's pending list.
func pendingCount(ctx context.Context, e *env) (int64, error) {
	return e.rdb.LLen(ctx, asynqPrefix+"pending").Result()
}

// waitPending waits until asynq's pending list holds n tasks.
func waitPending(ctx context.Context, e *env, n int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		got, err := pendingCount(ctx, e)
		if err != nil {
			return err
		}
		if got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d tasks pending after %s", got, n, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// clearAsynq removes every asynq key, leaving the schedules in place.
func clearAsynq(ctx context.Context, e *env) error {
	iter := e.rdb.Scan(ctx, 0, "asynq:*", 10000).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := e.rdb.Unlink(ctx, batch...).Err()
		batch = batch[:0]
		return err
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 5000 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	return flush()
}

// firstMembers returns the first n members, in partition order, keeping
// them by partition.
func firstMembers(members [][]string, n int) [][]string {
	out := make([][]string, len(members))
	for p, ids := range members {
		take := min(n, len(ids))
		out[p] = ids[:take]
		n -= take
	}
	return out
}

// flatten returns the members of every partition in one slice.
func flatten(members [][]string) []string {
	var out []string
	for _, m := range members {
		out = append(out, m...)
	}
	return out
}

// keyCount returns DBSIZE, for sanity checks.
func keyCount(ctx context.Context, e *env) (int64, error) {
	return e.rdb.DBSize(ctx).Result()
}
