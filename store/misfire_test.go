package store

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// createWithOptions creates a schedule with an interval of one hour and the
// given options.
func createWithOptions(t *testing.T, st *Store, o Options) *Schedule {
	t.Helper()
	n := newSchedule()
	n.Options = o
	return createSchedule(t, st, n)
}

func TestClaimMisfire(t *testing.T) {
	t.Parallel()
	rdb := startRedis(t)
	const missed = 5

	t.Run("run_latest claims latest slot", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		s := createWithOptions(t, st, Options{Misfire: MisfireRunLatest})
		slot := makeDue(t, st, s.ID, missed)

		c := claimDue(t, st, 0, 100)

		require.Len(t, c.Slots, 1)
		require.Equal(t, slot.Add(missed*s.Interval), c.Slots[0].Slot, "claimed slot")
		require.Equal(t, 1, c.Slots[0].Count, "slot count")
		require.Equal(t, map[string]int64{s.ID: missed}, c.Skipped, "skipped map")
		require.Equal(t, int64(missed), getSchedule(t, st, s.ID).SkippedSlots, "skipped slots of the schedule")
	})

	t.Run("skip claims nothing", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		s := createWithOptions(t, st, Options{Misfire: MisfireSkip})
		slot := makeDue(t, st, s.ID, missed)

		c := claimDue(t, st, 0, 100)

		require.Empty(t, c.Slots, "claimed slots")
		require.Empty(t, inflightMembers(t, st, 0), "inflight members")
		require.Equal(t, map[string]int64{s.ID: missed + 1}, c.Skipped, "skipped map")
		got := getSchedule(t, st, s.ID)
		require.Equal(t, int64(missed+1), got.SkippedSlots, "skipped slots of the schedule")
		next := slot.Add((missed + 1) * s.Interval)
		require.Equal(t, next, got.NextRunAt, "next slot")
		require.True(t, got.NextRunAt.After(c.Now), "next slot %s is not after now %s", got.NextRunAt, c.Now)
		require.Equal(t, next, dueScore(t, st, s.ID), "due score")
		require.Empty(t, hashField(t, st, s.ID, fieldInflight), "inflight record")
	})

	t.Run("skip leaves the next slot claimable", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		s := createWithOptions(t, st, Options{Misfire: MisfireSkip})
		makeDue(t, st, s.ID, missed)
		require.Empty(t, claimDue(t, st, 0, 100).Slots)

		slot := makeDue(t, st, s.ID, 0)
		c := claimDue(t, st, 0, 100)

		require.Len(t, c.Slots, 1)
		require.Equal(t, slot, c.Slots[0].Slot)
	})

	t.Run("run_all claims window as one range", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		s := createWithOptions(t, st, Options{Misfire: MisfireRunAll, MisfireWindow: 3 * time.Hour})
		slot := makeDue(t, st, s.ID, missed)
		latest := slot.Add(missed * s.Interval)

		c := claimDue(t, st, 0, 100)

		require.Len(t, c.Slots, 1)
		r := c.Slots[0]
		// A window of three intervals contains the latest slot and the three
		// before it.
		require.Equal(t, 4, r.Count, "slot count")
		require.Equal(t, latest.Add(-3*s.Interval), r.Slot, "first slot")
		require.Equal(t, s.Interval, r.Interval, "interval")
		require.Equal(t, map[string]int64{s.ID: missed - 3}, c.Skipped, "skipped map")
		got := getSchedule(t, st, s.ID)
		require.Equal(t, int64(missed-3), got.SkippedSlots, "skipped slots of the schedule")
		require.Equal(t, latest.Add(s.Interval), got.NextRunAt, "next slot")
	})

	t.Run("run_all default window", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		s := createWithOptions(t, st, Options{Misfire: MisfireRunAll})
		slot := makeDue(t, st, s.ID, missed)

		c := claimDue(t, st, 0, 100)

		require.Len(t, c.Slots, 1)
		// A window of one hour contains the latest slot and the one before.
		require.Equal(t, 2, c.Slots[0].Count, "slot count")
		require.Equal(t, slot.Add((missed-1)*s.Interval), c.Slots[0].Slot, "first slot")
		require.Equal(t, int64(missed-1), c.Skipped[s.ID], "skipped slots")
	})

	t.Run("run_all window wider than outage", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		s := createWithOptions(t, st, Options{Misfire: MisfireRunAll, MisfireWindow: 24 * time.Hour})
		slot := makeDue(t, st, s.ID, missed)

		c := claimDue(t, st, 0, 100)

		require.Len(t, c.Slots, 1)
		require.Equal(t, missed+1, c.Slots[0].Count, "slot count")
		require.Equal(t, slot, c.Slots[0].Slot, "first slot")
		require.Nil(t, c.Skipped, "skipped map")
		require.Zero(t, getSchedule(t, st, s.ID).SkippedSlots, "skipped slots of the schedule")
	})

	t.Run("run_all capped at CatchUpMax", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		n := newSchedule()
		n.Interval = time.Minute
		n.Options = Options{Misfire: MisfireRunAll, MisfireWindow: MisfireWindowMax}
		s := createSchedule(t, st, n)
		const longOutage = 2000
		slot := makeDue(t, st, s.ID, longOutage)
		latest := slot.Add(longOutage * s.Interval)

		c := claimDue(t, st, 0, 100)

		require.Len(t, c.Slots, 1)
		require.Equal(t, CatchUpMax, c.Slots[0].Count, "slot count")
		require.Equal(t, latest.Add(-(CatchUpMax-1)*s.Interval), c.Slots[0].Slot, "first slot")
		require.Equal(t, int64(longOutage+1-CatchUpMax), c.Skipped[s.ID], "skipped slots")
		require.Equal(t, int64(longOutage+1-CatchUpMax), getSchedule(t, st, s.ID).SkippedSlots, "skipped slots of the schedule")
	})

	t.Run("run_all inflight member contains count", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		s := createWithOptions(t, st, Options{Misfire: MisfireRunAll, MisfireWindow: 3 * time.Hour})
		makeDue(t, st, s.ID, missed)

		c := claimDue(t, st, 0, 100)
		require.Len(t, c.Slots, 1)

		members := inflightMembers(t, st, 0)
		require.Len(t, members, 1)
		want := fmt.Sprintf("%s|%d|%d|4", s.ID, c.Slots[0].Slot.UnixMilli(), s.Generation)
		require.Equal(t, want, members[0].Member, "inflight member")
		require.Equal(t, want, c.Slots[0].member(), "member of the claimed range")
		require.Equal(t, want, hashField(t, st, s.ID, fieldInflight), "inflight record of the schedule")
	})

	for _, policy := range []MisfirePolicy{MisfireRunLatest, MisfireSkip, MisfireRunAll} {
		t.Run(string(policy)+" slightly late claims normally", func(t *testing.T) {
			st := newTestStore(t, rdb, Config{Partitions: 1})
			s := createWithOptions(t, st, Options{Misfire: policy})
			slot := makeDue(t, st, s.ID, 0)

			c := claimDue(t, st, 0, 100)

			require.Len(t, c.Slots, 1)
			require.Equal(t, slot, c.Slots[0].Slot, "claimed slot")
			require.Equal(t, 1, c.Slots[0].Count, "slot count")
			require.Nil(t, c.Skipped, "skipped map")
			require.Zero(t, getSchedule(t, st, s.ID).SkippedSlots, "skipped slots of the schedule")
			require.Equal(t, slot.Add(s.Interval), getSchedule(t, st, s.ID).NextRunAt, "next slot")
		})
	}
}

func TestClaimedSlotSlots(t *testing.T) {
	first := time.Date(2025, 3, 14, 15, 0, 0, 0, time.UTC)
	ref := SlotRef{ScheduleID: "01JDQ5V9M3K2X8Y7Z6W5T4R3Q2", Slot: first, Generation: 3}

	t.Run("single slot", func(t *testing.T) {
		c := ClaimedSlot{SlotRef: ref, Count: 1, Interval: time.Minute}
		require.Equal(t, []SlotRef{ref}, c.Slots())
	})

	t.Run("range in order", func(t *testing.T) {
		c := ClaimedSlot{SlotRef: ref, Count: 3, Interval: time.Minute}
		want := []SlotRef{
			ref,
			{ScheduleID: ref.ScheduleID, Slot: first.Add(time.Minute), Generation: 3},
			{ScheduleID: ref.ScheduleID, Slot: first.Add(2 * time.Minute), Generation: 3},
		}
		require.Equal(t, want, c.Slots())
	})

	t.Run("distinct execution IDs", func(t *testing.T) {
		c := ClaimedSlot{SlotRef: ref, Count: 3, Interval: time.Minute}
		seen := map[string]bool{}
		for _, r := range c.Slots() {
			seen[r.ExecutionID()] = true
		}
		require.Len(t, seen, 3)
	})
}

func TestInflightMember(t *testing.T) {
	ref := SlotRef{ScheduleID: "01JDQ5V9M3K2X8Y7Z6W5T4R3Q2", Slot: time.UnixMilli(1_741_964_400_000).UTC(), Generation: 7}

	t.Run("format", func(t *testing.T) {
		c := ClaimedSlot{SlotRef: ref, Count: 12}
		require.Equal(t, "01JDQ5V9M3K2X8Y7Z6W5T4R3Q2|1741964400000|7|12", c.member())
	})

	t.Run("round trip", func(t *testing.T) {
		c := ClaimedSlot{SlotRef: ref, Count: 12}
		got, err := parseMember(c.member())
		require.NoError(t, err)
		require.Equal(t, c, got)
	})

	t.Run("member without count means one slot", func(t *testing.T) {
		got, err := parseMember("01JDQ5V9M3K2X8Y7Z6W5T4R3Q2|1741964400000|7")
		require.NoError(t, err)
		require.Equal(t, ClaimedSlot{SlotRef: ref, Count: 1}, got)
	})

	for _, bad := range []string{
		"", "id", "id|1", "id|x|1|1", "id|1|x|1", "id|1|1|x", "id|1|1|0", "id|1|1|-1", "id|1|1|1|1",
	} {
		t.Run(fmt.Sprintf("malformed %q", bad), func(t *testing.T) {
			_, err := parseMember(bad)
			require.Error(t, err)
		})
	}
}
