package store

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// StateCounts is the number of schedules in each state.
type StateCounts struct {
	Active, Paused, Deleted int64
}

// CountByState counts the schedules of every partition by state, with three
// O(1) or O(log n) commands per partition. Deleted schedules are counted
// until their retention ends.
func (s *Store) CountByState(ctx context.Context) (StateCounts, error) {
	now, err := s.ServerTime(ctx)
	if err != nil {
		return StateCounts{}, err
	}
	nowMS := fmt.Sprint(now.UnixMilli())

	partitions := s.keys.Partitions()
	active := make([]*redis.IntCmd, partitions)
	paused := make([]*redis.IntCmd, partitions)
	deleted := make([]*redis.IntCmd, partitions)
	_, err = s.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for p := range partitions {
			active[p] = pipe.ZCard(ctx, s.keys.DueKey(p))
			paused[p] = pipe.SCard(ctx, s.keys.PausedKey(p))
			deleted[p] = pipe.ZCount(ctx, s.keys.DeletedKey(p), "("+nowMS, "+inf")
		}
		return nil
	})
	if err != nil {
		return StateCounts{}, fmt.Errorf("count schedules by state: %w", err)
	}

	var c StateCounts
	for p := range partitions {
		c.Active += active[p].Val()
		c.Paused += paused[p].Val()
		c.Deleted += deleted[p].Val()
	}
	return c, nil
}

// CountOwned counts the schedules of one plugin that are not deleted.
func (s *Store) CountOwned(ctx context.Context, atsCode string) (int64, error) {
	partitions := s.keys.Partitions()
	counts := make([]*redis.StringCmd, partitions)
	_, err := s.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for p := range partitions {
			counts[p] = pipe.HGet(ctx, s.keys.OwnersKey(p), atsCode)
		}
		return nil
	})
	if err != nil && err != redis.Nil {
		return 0, fmt.Errorf("count schedules of plugin %s: %w", atsCode, err)
	}
	var total int64
	for _, c := range counts {
		n, _ := c.Int64()
		total += n
	}
	return total, nil
}

// Overdue is the result of Maintain for one partition.
type Overdue struct {
	// Count is the number of overdue schedules: active, with a next slot
	// more than one interval in the past.
	Count int64
	// Truncated is true when the partition had more candidates than Maintain
	// checks at once, so Count is a lower bound.
	Truncated bool
	// Sample holds the IDs of up to sampleMax overdue schedules.
	Sample []string
}

// overdueCandidatesMax bounds the schedules Maintain checks per partition.
const overdueCandidatesMax = 1000

// overdueSampleMax bounds the IDs Maintain returns per partition.
const overdueSampleMax = 5

// Maintain checks partition p for overdue schedules, the sign of a silent
// stop, and removes deleted schedules whose retention ended from the
// deleted index (Redis expires their records by itself).
func (s *Store) Maintain(ctx context.Context, p int) (Overdue, error) {
	keys := []string{s.keys.DueKey(p), s.keys.DeletedKey(p)}
	v, err := maintainScript.Run(ctx, s.rdb, keys, s.keys.schedulePrefix(p), overdueCandidatesMax, overdueSampleMax).Slice()
	if err != nil {
		return Overdue{}, fmt.Errorf("maintain partition %d: %w", p, err)
	}
	if len(v) < 2 {
		return Overdue{}, fmt.Errorf("maintain partition %d: unexpected script reply %v", p, v)
	}
	o := Overdue{Count: asInt64(v[0]), Truncated: asInt64(v[1]) == 1}
	for _, id := range v[2:] {
		o.Sample = append(o.Sample, asString(id))
	}
	return o, nil
}
