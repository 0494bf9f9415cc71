package store

import (
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

func countByState(t *testing.T, st *Store) StateCounts {
	t.Helper()
	c, err := st.CountByState(testContext(t))
	require.NoError(t, err)
	return c
}

func countOwned(t *testing.T, st *Store, atsCode string) int64 {
	t.Helper()
	n, err := st.CountOwned(testContext(t), atsCode)
	require.NoError(t, err)
	return n
}

func maintain(t *testing.T, st *Store, p int) Overdue {
	t.Helper()
	o, err := st.Maintain(testContext(t), p)
	require.NoError(t, err)
	return o
}

func TestCountByState(t *testing.T) {
	t.Parallel()
	rdb := startRedis(t)

	t.Run("empty store", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 4})
		require.Equal(t, StateCounts{}, countByState(t, st))
	})

	t.Run("counts every state", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 4})
		for range 3 {
			createSchedule(t, st, newSchedule())
		}
		for range 2 {
			s := createSchedule(t, st, newSchedule())
			_, err := st.PauseSchedule(testContext(t), s.ID, "")
			require.NoError(t, err)
		}
		deleted := createSchedule(t, st, newSchedule())
		_, err := st.DeleteSchedule(testContext(t), deleted.ID, "")
		require.NoError(t, err)

		require.Equal(t, StateCounts{Active: 3, Paused: 2, Deleted: 1}, countByState(t, st))
	})

	t.Run("auto-paused counted as paused", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 4})
		s := createWithOptions(t, st, Options{PauseAfterFailures: 1})
		require.True(t, failSlot(t, st, s, 1).Paused)

		require.Equal(t, StateCounts{Paused: 1}, countByState(t, st))
	})

	t.Run("resumed counted as active", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 4})
		s := createSchedule(t, st, newSchedule())
		_, err := st.PauseSchedule(testContext(t), s.ID, "")
		require.NoError(t, err)
		_, err = st.ResumeSchedule(testContext(t), s.ID, "")
		require.NoError(t, err)

		require.Equal(t, StateCounts{Active: 1}, countByState(t, st))
	})

	t.Run("deleted counted until retention", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 4, DeletedRetention: time.Second})
		s := createSchedule(t, st, newSchedule())
		_, err := st.DeleteSchedule(testContext(t), s.ID, "")
		require.NoError(t, err)
		require.Equal(t, StateCounts{Deleted: 1}, countByState(t, st), "counts right after the delete")

		ctx := testContext(t)
		require.Eventually(t, func() bool {
			c, err := st.CountByState(ctx)
			return err == nil && c == StateCounts{}
		}, 10*time.Second, 50*time.Millisecond, "a deleted schedule is counted after its retention")
	})
}

func TestCountOwned(t *testing.T) {
	t.Parallel()
	rdb := startRedis(t)

	// ownerFields counts the partitions whose owners hash has a field for
	// atsCode.
	ownerFields := func(t *testing.T, st *Store, atsCode string) int {
		t.Helper()
		n := 0
		for p := range st.keys.Partitions() {
			ok, err := rdb.HExists(testContext(t), st.keys.OwnersKey(p), atsCode).Result()
			require.NoError(t, err)
			if ok {
				n++
			}
		}
		return n
	}
	create := func(t *testing.T, st *Store, atsCode string) *Schedule {
		t.Helper()
		n := newSchedule()
		n.ATSCode = atsCode
		return createSchedule(t, st, n)
	}

	t.Run("unknown plugin zero", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 4})
		require.Zero(t, countOwned(t, st, "alpha"))
	})

	t.Run("counts per plugin", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 4})
		for range 5 {
			create(t, st, "alpha")
		}
		for range 2 {
			create(t, st, "beta")
		}

		require.Equal(t, int64(5), countOwned(t, st, "alpha"), "alpha")
		require.Equal(t, int64(2), countOwned(t, st, "beta"), "beta")
	})

	t.Run("paused still counted", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 4})
		s := create(t, st, "alpha")
		_, err := st.PauseSchedule(testContext(t), s.ID, "")
		require.NoError(t, err)

		require.Equal(t, int64(1), countOwned(t, st, "alpha"))
	})

	t.Run("deleted not counted", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 4})
		remaining := create(t, st, "alpha")
		removed := create(t, st, "alpha")

		_, err := st.DeleteSchedule(testContext(t), removed.ID, "")
		require.NoError(t, err)
		require.Equal(t, int64(1), countOwned(t, st, "alpha"), "after one delete")

		_, err = st.DeleteSchedule(testContext(t), removed.ID, "")
		require.NoError(t, err)
		require.Equal(t, int64(1), countOwned(t, st, "alpha"), "after a repeated delete")
		require.Equal(t, StateActive, getSchedule(t, st, remaining.ID).State, "state of the other schedule")
	})

	t.Run("owner field removed at zero", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 4})
		var ids []string
		for range 6 {
			ids = append(ids, create(t, st, "alpha").ID)
		}
		create(t, st, "beta")
		require.Positive(t, ownerFields(t, st, "alpha"), "owner fields before the deletes")

		for _, id := range ids {
			_, err := st.DeleteSchedule(testContext(t), id, "")
			require.NoError(t, err)
		}

		require.Zero(t, countOwned(t, st, "alpha"), "count")
		require.Zero(t, ownerFields(t, st, "alpha"), "owner fields")
		require.Equal(t, int64(1), countOwned(t, st, "beta"), "other plugin")
	})
}

func TestMaintain(t *testing.T) {
	t.Parallel()
	rdb := startRedis(t)

	t.Run("nothing overdue", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		createSchedule(t, st, newSchedule())
		s := createSchedule(t, st, newSchedule())
		makeDue(t, st, s.ID, 0)

		require.Equal(t, Overdue{}, maintain(t, st, 0))
	})

	t.Run("counts overdue schedules", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		late := createSchedule(t, st, newSchedule())
		makeDue(t, st, late.ID, 1)
		onTime := createSchedule(t, st, newSchedule())
		makeDue(t, st, onTime.ID, 0)

		o := maintain(t, st, 0)

		require.Equal(t, int64(1), o.Count, "count")
		require.False(t, o.Truncated, "truncated")
		require.Equal(t, []string{late.ID}, o.Sample, "sample")
	})

	t.Run("paused schedule not overdue", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		s := createSchedule(t, st, newSchedule())
		makeDue(t, st, s.ID, 3)
		_, err := st.PauseSchedule(testContext(t), s.ID, "")
		require.NoError(t, err)

		require.Zero(t, maintain(t, st, 0).Count)
	})

	t.Run("sample capped", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		var ids []string
		for range overdueSampleMax + 2 {
			s := createSchedule(t, st, newSchedule())
			makeDue(t, st, s.ID, 2)
			ids = append(ids, s.ID)
		}

		o := maintain(t, st, 0)

		require.Equal(t, int64(overdueSampleMax+2), o.Count, "count")
		require.Len(t, o.Sample, overdueSampleMax, "sample")
		for _, id := range o.Sample {
			require.Contains(t, ids, id, "sampled ID")
		}
	})

	t.Run("truncated at candidate limit", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		s := createSchedule(t, st, newSchedule())
		makeDue(t, st, s.ID, 2)
		// Due entries without a schedule hash are candidates that never
		// count as overdue.
		old := float64(serverTime(t, st).Add(-time.Hour).UnixMilli())
		entries := make([]redis.Z, overdueCandidatesMax)
		for i := range entries {
			entries[i] = redis.Z{Score: old, Member: fmt.Sprintf("ghost%04d", i)}
		}
		require.NoError(t, rdb.ZAdd(testContext(t), st.keys.DueKey(0), entries...).Err())

		o := maintain(t, st, 0)

		require.True(t, o.Truncated, "truncated")
		// The oldest candidates are checked, and the overdue schedule is the
		// oldest.
		require.Equal(t, int64(1), o.Count, "count")
	})

	t.Run("removes expired deleted entries", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		key := st.keys.DeletedKey(0)
		future := float64(serverTime(t, st).Add(time.Hour).UnixMilli())
		require.NoError(t, rdb.ZAdd(testContext(t), key,
			redis.Z{Score: 1, Member: "expired"},
			redis.Z{Score: future, Member: "retained"},
		).Err())

		maintain(t, st, 0)

		members, err := rdb.ZRange(testContext(t), key, 0, -1).Result()
		require.NoError(t, err)
		require.Equal(t, []string{"retained"}, members)
	})

	t.Run("removes deleted entry after retention", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1, DeletedRetention: time.Second})
		s := createSchedule(t, st, newSchedule())
		_, err := st.DeleteSchedule(testContext(t), s.ID, "")
		require.NoError(t, err)

		maintain(t, st, 0)
		ctx := testContext(t)
		key := st.keys.DeletedKey(0)
		n, err := rdb.ZCard(ctx, key).Result()
		require.NoError(t, err)
		require.Equal(t, int64(1), n, "deleted entries within the retention")

		require.Eventually(t, func() bool {
			if _, err := st.Maintain(ctx, 0); err != nil {
				return false
			}
			n, err := rdb.ZCard(ctx, key).Result()
			return err == nil && n == 0
		}, 10*time.Second, 50*time.Millisecond)
	})
}

func TestCreateStartAt(t *testing.T) {
	t.Parallel()
	rdb := startRedis(t)
	st := newTestStore(t, rdb, Config{Partitions: 4})

	t.Run("future start anchors grid", func(t *testing.T) {
		n := newSchedule()
		n.StartAt = serverTime(t, st).Add(90 * time.Minute).Truncate(time.Millisecond)

		created := createSchedule(t, st, n)

		got := getSchedule(t, st, n.ID)
		require.Equal(t, n.StartAt, got.Anchor, "anchor")
		require.Equal(t, n.StartAt, got.NextRunAt, "first slot")
		require.Equal(t, n.StartAt, dueScore(t, st, n.ID), "due score")
		require.Equal(t, got.Anchor, created.Anchor, "anchor returned by create")
		require.Equal(t, got.NextRunAt, created.NextRunAt, "first slot returned by create")
		require.True(t, got.CreatedAt.Before(n.StartAt), "created %s, start %s", got.CreatedAt, n.StartAt)
	})

	t.Run("sub-millisecond start truncated", func(t *testing.T) {
		n := newSchedule()
		n.StartAt = serverTime(t, st).Add(time.Hour + 700*time.Microsecond)

		createSchedule(t, st, n)

		require.Equal(t, n.StartAt.Truncate(time.Millisecond), getSchedule(t, st, n.ID).Anchor)
	})

	t.Run("past start means now", func(t *testing.T) {
		n := newSchedule()
		n.StartAt = serverTime(t, st).Add(-time.Hour)

		createSchedule(t, st, n)

		got := getSchedule(t, st, n.ID)
		require.Equal(t, got.CreatedAt, got.Anchor, "anchor")
		require.Equal(t, got.CreatedAt, got.NextRunAt, "first slot")
		require.Equal(t, got.CreatedAt, dueScore(t, st, n.ID), "due score")
	})

	t.Run("start wins over run immediately", func(t *testing.T) {
		n := newSchedule()
		n.RunImmediately = true
		n.StartAt = serverTime(t, st).Add(time.Hour).Truncate(time.Millisecond)

		createSchedule(t, st, n)

		require.Equal(t, n.StartAt, getSchedule(t, st, n.ID).NextRunAt)
	})

	t.Run("first claim takes start slot", func(t *testing.T) {
		onePartition := newTestStore(t, rdb, Config{Partitions: 1})
		n := newSchedule()
		n.StartAt = serverTime(t, onePartition).Add(-time.Hour)
		s := createSchedule(t, onePartition, n)

		c := claimDue(t, onePartition, 0, 100)

		require.Len(t, c.Slots, 1)
		require.Equal(t, s.Anchor, c.Slots[0].Slot, "claimed slot")
		require.Nil(t, c.Skipped, "skipped map")
	})
}

func TestCreateStoresOptions(t *testing.T) {
	t.Parallel()
	rdb := startRedis(t)
	st := newTestStore(t, rdb, Config{Partitions: 4})

	t.Run("every option read back", func(t *testing.T) {
		o := Options{
			Timeout: 90 * time.Second, MaxRetry: 5, Misfire: MisfireRunAll, MisfireWindow: 10 * time.Minute,
			Overlap: OverlapBufferOne, PauseAfterFailures: 4,
		}
		created := createWithOptions(t, st, o)

		require.Equal(t, o, created.Options, "options returned by create")
		require.Equal(t, o, getSchedule(t, st, created.ID).Options, "options read back")
	})

	t.Run("defaults spelled out", func(t *testing.T) {
		s := createWithOptions(t, st, Options{})

		want := Options{Misfire: MisfireRunLatest, Overlap: OverlapSkip}
		require.Equal(t, want, getSchedule(t, st, s.ID).Options)
	})

	t.Run("run_all default window", func(t *testing.T) {
		s := createWithOptions(t, st, Options{Misfire: MisfireRunAll})

		require.Equal(t, MisfireWindowDefault, getSchedule(t, st, s.ID).MisfireWindow)
	})

	t.Run("defaults not stored", func(t *testing.T) {
		s := createWithOptions(t, st, Options{Misfire: MisfireRunLatest, Overlap: OverlapSkip})

		require.Empty(t, hashField(t, st, s.ID, fieldMisfire), "misfire field")
		require.Empty(t, hashField(t, st, s.ID, fieldMisfireWindow), "misfire window field")
		require.Empty(t, hashField(t, st, s.ID, fieldOverlap), "overlap field")
		require.Empty(t, hashField(t, st, s.ID, fieldPauseAfter), "pause after field")
	})

	for _, tc := range []struct {
		name string
		o    Options
	}{
		{"unknown misfire policy", Options{Misfire: "sometimes"}},
		{"unknown overlap policy", Options{Overlap: "queue"}},
		{"negative timeout", Options{Timeout: -time.Second}},
		{"negative max retry", Options{MaxRetry: -1}},
		{"negative misfire window", Options{MisfireWindow: -time.Second}},
		{"misfire window above max", Options{MisfireWindow: MisfireWindowMax + time.Millisecond}},
		{"negative pause after failures", Options{PauseAfterFailures: -1}},
	} {
		t.Run(tc.name+" rejected", func(t *testing.T) {
			n := newSchedule()
			n.Options = tc.o

			_, err := st.CreateSchedule(testContext(t), n)

			require.Error(t, err)
			require.Equal(t, 0, dueEntries(t, st, n.ID), "due entries")
		})
	}
}
