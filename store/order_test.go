package store

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestClaimOrder(t *testing.T) {
	rdb := startRedis(t)

	t.Run("waits for unacknowledged claim", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		s := createSchedule(t, st, newSchedule())
		makeDue(t, st, s.ID, 0)
		first := claimDue(t, st, 0, 100)
		require.Len(t, first.Slots, 1)

		// The next slot falls due while the first claim is still in flight.
		makeDue(t, st, s.ID, 0)
		blocked := claimDue(t, st, 0, 100)
		require.Empty(t, blocked.Slots, "a later slot was claimed before the earlier claim was enqueued")
		require.True(t, dueScore(t, st, s.ID).After(blocked.Now), "the blocked schedule must wake after now")

		// Once the first claim is acknowledged, the schedule is claimed again.
		require.NoError(t, st.AckSlots(testContext(t), 0, first.Slots))
		makeDue(t, st, s.ID, 0)
		again := claimDue(t, st, 0, 100)
		require.Len(t, again.Slots, 1)
		require.Equal(t, again.Slots[0].member(), hashField(t, st, s.ID, fieldInflight), "the new claim is recorded")
	})

	t.Run("reclaimed slot precedes later slots", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		s := createSchedule(t, st, newSchedule())
		makeDue(t, st, s.ID, 0)
		c, err := st.ClaimDue(testContext(t), 0, 100, time.Second)
		require.NoError(t, err)
		require.Len(t, c.Slots, 1)

		ctx := testContext(t)
		var reclaimed []ClaimedSlot
		require.Eventually(t, func() bool {
			reclaimed, err = st.ReclaimExpired(ctx, 0, 100, claimLease)
			return err == nil && len(reclaimed) == 1
		}, 10*time.Second, 20*time.Millisecond)

		// The reclaimed claim has a new lease, so the schedule still waits.
		makeDue(t, st, s.ID, 0)
		require.Empty(t, claimDue(t, st, 0, 100).Slots)

		require.NoError(t, st.AckSlots(testContext(t), 0, reclaimed))
		makeDue(t, st, s.ID, 0)
		require.Len(t, claimDue(t, st, 0, 100).Slots, 1)
	})

	t.Run("stale inflight record cleared", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		s := createSchedule(t, st, newSchedule())
		p := st.keys.PartitionOf(s.ID)
		require.NoError(t, rdb.HSet(testContext(t), st.keys.ScheduleKey(p, s.ID), fieldInflight, "gone|1|1|1").Err())
		makeDue(t, st, s.ID, 0)

		c := claimDue(t, st, 0, 100)

		require.Len(t, c.Slots, 1, "a record of a claim no longer in flight must not block")
		require.Equal(t, c.Slots[0].member(), hashField(t, st, s.ID, fieldInflight))
	})

	t.Run("woken early schedule keeps its slot", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		s := createSchedule(t, st, newSchedule())
		p := st.keys.PartitionOf(s.ID)
		require.NoError(t, rdb.ZAdd(testContext(t), st.keys.DueKey(p), redisZ(s.ID, 1)).Err())

		c := claimDue(t, st, 0, 100)

		require.Empty(t, c.Slots)
		require.Equal(t, s.NextRunAt, dueScore(t, st, s.ID), "the due score returns to the next slot")
	})
}
