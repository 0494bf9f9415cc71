package store

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/internal/redistest"
)

// prefixCounter makes every test store's key prefix unique, so stores that
// share one redis-server never see each other's keys.
var prefixCounter atomic.Int64

func startRedis(t *testing.T) *redis.Client {
	t.Helper()
	return redistest.Start(t).Client()
}

// testContext returns a context that ends with the test or after 30s, so a
// stuck Redis call fails the test instead of hanging it.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newTestStore returns an initialized Store with a key prefix of its own.
func newTestStore(t *testing.T, rdb *redis.Client, cfg Config) *Store {
	t.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = fmt.Sprintf("test%d", prefixCounter.Add(1))
	}
	st, err := New(rdb, cfg)
	require.NoError(t, err)
	require.NoError(t, st.Init(testContext(t)))
	return st
}

// newSchedule returns a schedule definition with a fresh ID and an interval
// of one hour, long enough that no slot falls due while a test runs.
func newSchedule() NewSchedule {
	return NewSchedule{
		ID:           ulid.Make().String(),
		ATSCode:      "alpha",
		HandlerName:  "reports.daily",
		SourceURL:    "grpc://alpha.plugins.internal:9000",
		Interval:     time.Hour,
		Payload:      []byte("payload"),
		MetadataJSON: `{"team":"billing"}`,
	}
}

func createSchedule(t *testing.T, st *Store, n NewSchedule) *Schedule {
	t.Helper()
	s, err := st.CreateSchedule(testContext(t), n)
	require.NoError(t, err)
	return s
}

func getSchedule(t *testing.T, st *Store, id string) *Schedule {
	t.Helper()
	s, err := st.GetSchedule(testContext(t), id, "")
	require.NoError(t, err)
	return s
}

func serverTime(t *testing.T, st *Store) time.Time {
	t.Helper()
	now, err := st.ServerTime(testContext(t))
	require.NoError(t, err)
	return now
}

// dueEntries counts the entries of a schedule in the due sets of every
// partition.
func dueEntries(t *testing.T, st *Store, id string) int {
	t.Helper()
	ctx := testContext(t)
	n := 0
	for p := 0; p < st.keys.Partitions(); p++ {
		err := st.rdb.ZScore(ctx, st.keys.DueKey(p), id).Err()
		if err == redis.Nil {
			continue
		}
		require.NoError(t, err)
		n++
	}
	return n
}

// dueScore returns the score of a schedule in its partition's due set.
func dueScore(t *testing.T, st *Store, id string) time.Time {
	t.Helper()
	score, err := st.rdb.ZScore(testContext(t), st.keys.DueKey(st.keys.PartitionOf(id)), id).Result()
	require.NoError(t, err)
	return msToTime(int64(score))
}

// hashField returns one raw field of a schedule's hash, or "" when the field
// is absent.
func hashField(t *testing.T, st *Store, id, field string) string {
	t.Helper()
	v, err := st.rdb.HGet(testContext(t), st.keys.ScheduleKey(st.keys.PartitionOf(id), id), field).Result()
	if err == redis.Nil {
		return ""
	}
	require.NoError(t, err)
	return v
}

// makeDue rewrites the grid of an active schedule so that its next slot lies
// missed intervals and half an interval before the Redis time, and returns
// that slot. A claim right after it takes the slot missed intervals later,
// the latest grid slot not after now.
func makeDue(t *testing.T, st *Store, id string, missed int) time.Time {
	t.Helper()
	ctx := testContext(t)
	s := getSchedule(t, st, id)
	now := serverTime(t, st)
	slot := now.Add(-time.Duration(missed)*s.Interval - s.Interval/2).Truncate(time.Millisecond)
	ms := strconv.FormatInt(slot.UnixMilli(), 10)

	p := st.keys.PartitionOf(id)
	require.NoError(t, st.rdb.HSet(ctx, st.keys.ScheduleKey(p, id), fieldAnchorMS, ms, fieldNextMS, ms).Err())
	require.NoError(t, st.rdb.ZAdd(ctx, st.keys.DueKey(p), redis.Z{Score: float64(slot.UnixMilli()), Member: id}).Err())
	return slot
}

// slotOf returns the slot k intervals after the schedule's anchor, at the
// schedule's current generation.
func slotOf(s *Schedule, k int) SlotRef {
	return SlotRef{
		ScheduleID: s.ID,
		Slot:       s.Anchor.Add(time.Duration(k) * s.Interval),
		Generation: s.Generation,
	}
}

// redisZ returns a ZSET entry.
func redisZ(member string, score float64) redis.Z {
	return redis.Z{Score: score, Member: member}
}
