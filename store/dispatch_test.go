package store

import (
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const claimLease = time.Minute

func claimDue(t *testing.T, st *Store, p, max int) Claim {
	t.Helper()
	c, err := st.ClaimDue(testContext(t), p, max, claimLease)
	require.NoError(t, err)
	return c
}

func claimedIDs(c Claim) []string {
	ids := make([]string, 0, len(c.Slots))
	for _, s := range c.Slots {
		ids = append(ids, s.ScheduleID)
	}
	sort.Strings(ids)
	return ids
}

func inflightMembers(t *testing.T, st *Store, p int) []redis.Z {
	t.Helper()
	members, err := st.rdb.ZRangeWithScores(testContext(t), st.keys.InflightKey(p), 0, -1).Result()
	require.NoError(t, err)
	return members
}

func TestClaimDue(t *testing.T) {
	rdb := startRedis(t)

	t.Run("claims only due schedules", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		dueA := createSchedule(t, st, newSchedule())
		dueB := createSchedule(t, st, newSchedule())
		notDue := createSchedule(t, st, newSchedule())
		slotA := makeDue(t, st, dueA.ID, 0)
		slotB := makeDue(t, st, dueB.ID, 0)

		c := claimDue(t, st, 0, 100)

		want := []string{dueA.ID, dueB.ID}
		sort.Strings(want)
		require.Equal(t, want, claimedIDs(c))
		for _, s := range c.Slots {
			wantSlot := slotA
			if s.ScheduleID == dueB.ID {
				wantSlot = slotB
			}
			require.Equal(t, wantSlot, s.Slot, "slot of %s", s.ScheduleID)
			require.Equal(t, int64(1), s.Generation, "generation of %s", s.ScheduleID)
			require.Zero(t, c.Skipped[s.ScheduleID], "skipped slots of %s", s.ScheduleID)
			require.Equal(t, 1, s.Count, "slot count of %s", s.ScheduleID)
		}
		require.Equal(t, notDue.NextRunAt, getSchedule(t, st, notDue.ID).NextRunAt)
	})

	t.Run("moves schedule to next grid slot", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		s := createSchedule(t, st, newSchedule())
		slot := makeDue(t, st, s.ID, 0)

		c := claimDue(t, st, 0, 100)
		require.Len(t, c.Slots, 1)

		next := slot.Add(s.Interval)
		require.Equal(t, next, dueScore(t, st, s.ID))
		require.Equal(t, next, getSchedule(t, st, s.ID).NextRunAt)
		require.Equal(t, 1, dueEntries(t, st, s.ID))
		require.Empty(t, claimDue(t, st, 0, 100).Slots)
	})

	t.Run("records inflight member", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		s := createSchedule(t, st, newSchedule())
		slot := makeDue(t, st, s.ID, 0)

		c := claimDue(t, st, 0, 100)
		require.Len(t, c.Slots, 1)

		members := inflightMembers(t, st, 0)
		require.Len(t, members, 1)
		require.Equal(t, fmt.Sprintf("%s|%d|1|1", s.ID, slot.UnixMilli()), members[0].Member)
		require.Equal(t, c.Slots[0].member(), members[0].Member)
		leaseEnd := msToTime(int64(members[0].Score))
		require.Equal(t, c.Now.Add(claimLease), leaseEnd)

		n, err := st.CountInflight(testContext(t), 0)
		require.NoError(t, err)
		require.Equal(t, int64(1), n)
	})

	t.Run("misfire claims latest slot once", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		s := createSchedule(t, st, newSchedule())
		const missed = 5
		slot := makeDue(t, st, s.ID, missed)

		c := claimDue(t, st, 0, 100)

		require.Len(t, c.Slots, 1)
		latest := slot.Add(missed * s.Interval)
		require.Equal(t, latest, c.Slots[0].Slot)
		require.Equal(t, int64(missed), c.Skipped[s.ID])
		require.Equal(t, int64(missed), getSchedule(t, st, s.ID).SkippedSlots)
		require.False(t, c.Slots[0].Slot.After(c.Now), "claimed slot %s is after now %s", c.Slots[0].Slot, c.Now)
		require.True(t, latest.Add(s.Interval).After(c.Now), "slot %s is not the latest due one at %s", latest, c.Now)
		require.Equal(t, latest.Add(s.Interval), dueScore(t, st, s.ID))
		require.Empty(t, claimDue(t, st, 0, 100).Slots)
	})

	t.Run("batch limit respected", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		var slots []time.Time
		for i := 0; i < 5; i++ {
			s := createSchedule(t, st, newSchedule())
			slots = append(slots, makeDue(t, st, s.ID, 0))
		}
		sort.Slice(slots, func(i, j int) bool { return slots[i].Before(slots[j]) })

		first := claimDue(t, st, 0, 2)
		require.Len(t, first.Slots, 2)
		require.Equal(t, slots[2], first.NextDue, "next due must be the earliest unclaimed slot")
		require.False(t, first.NextDue.After(first.Now))

		second := claimDue(t, st, 0, 2)
		require.Len(t, second.Slots, 2)
		third := claimDue(t, st, 0, 2)
		require.Len(t, third.Slots, 1)
		require.Empty(t, claimDue(t, st, 0, 2).Slots)

		n, err := st.CountInflight(testContext(t), 0)
		require.NoError(t, err)
		require.Equal(t, int64(5), n)
	})

	t.Run("next due reported", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		early := createSchedule(t, st, newSchedule())
		later := newSchedule()
		later.Interval = 2 * time.Hour
		createSchedule(t, st, later)

		c := claimDue(t, st, 0, 100)
		require.Empty(t, c.Slots)
		require.Equal(t, early.NextRunAt, c.NextDue)
	})

	t.Run("next due after claim", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		s := createSchedule(t, st, newSchedule())
		slot := makeDue(t, st, s.ID, 0)

		c := claimDue(t, st, 0, 100)
		require.Equal(t, slot.Add(s.Interval), c.NextDue)
	})

	t.Run("empty partition has no next due", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		c := claimDue(t, st, 0, 100)
		require.Empty(t, c.Slots)
		require.True(t, c.NextDue.IsZero(), "next due %s", c.NextDue)
		require.False(t, c.Now.IsZero())
	})

	t.Run("drops inactive due entries", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		s := createSchedule(t, st, newSchedule())
		_, err := st.PauseSchedule(testContext(t), s.ID, "")
		require.NoError(t, err)
		// A due entry of a paused or missing schedule breaks the invariant,
		// so the claim must remove it instead of firing the schedule.
		require.NoError(t, rdb.ZAdd(testContext(t), st.keys.DueKey(0), redis.Z{Score: 1, Member: s.ID}).Err())
		require.NoError(t, rdb.ZAdd(testContext(t), st.keys.DueKey(0), redis.Z{Score: 1, Member: "01JDQ5V9M3K2X8Y7Z6W5T4R3Q2"}).Err())

		c := claimDue(t, st, 0, 100)
		require.Empty(t, c.Slots)
		require.Equal(t, 0, dueEntries(t, st, s.ID))
		require.Equal(t, 0, dueEntries(t, st, "01JDQ5V9M3K2X8Y7Z6W5T4R3Q2"))
		require.Empty(t, inflightMembers(t, st, 0))
	})

	t.Run("claims in every partition", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 4})
		byPartition := map[int]int{}
		for i := 0; i < 12; i++ {
			s := createSchedule(t, st, newSchedule())
			makeDue(t, st, s.ID, 0)
			byPartition[st.keys.PartitionOf(s.ID)]++
		}
		for p := 0; p < 4; p++ {
			c := claimDue(t, st, p, 100)
			require.Len(t, c.Slots, byPartition[p], "partition %d", p)
			for _, s := range c.Slots {
				require.Equal(t, p, st.keys.PartitionOf(s.ScheduleID))
			}
		}
	})
}

func TestClaimDueConcurrent(t *testing.T) {
	rdb := startRedis(t)
	st := newTestStore(t, rdb, Config{Partitions: 2})
	const schedules = 200

	want := map[string]bool{}
	for i := 0; i < schedules; i++ {
		s := createSchedule(t, st, newSchedule())
		makeDue(t, st, s.ID, i%3)
		want[s.ID] = true
	}

	// Two claimers, each with its own client as separate replicas would
	// have, claim small batches until a pass over every partition finds
	// nothing due.
	ctx := testContext(t)
	claimer := func(out *[]ClaimedSlot, errs chan<- error) {
		client := redis.NewClient(&redis.Options{Addr: rdb.Options().Addr})
		defer client.Close()
		replica, err := New(client, st.cfg)
		if err != nil {
			errs <- err
			return
		}
		for pass := 0; pass < 1000; pass++ {
			found := false
			for p := 0; p < 2; p++ {
				c, err := replica.ClaimDue(ctx, p, 3, claimLease)
				if err != nil {
					errs <- err
					return
				}
				found = found || len(c.Slots) > 0
				*out = append(*out, c.Slots...)
			}
			if !found {
				errs <- nil
				return
			}
		}
		errs <- fmt.Errorf("claimer still found due slots after 1000 passes")
	}

	var results [2][]ClaimedSlot
	errs := make(chan error, 2)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			claimer(&results[i], errs)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	t.Logf("claimers took %d and %d slots", len(results[0]), len(results[1]))
	claimed := map[string]int{}
	for _, r := range results {
		for _, s := range r {
			claimed[s.member()]++
		}
	}
	for member, n := range claimed {
		require.Equal(t, 1, n, "slot %s claimed %d times", member, n)
	}

	perSchedule := map[string]int{}
	for _, r := range results {
		for _, s := range r {
			perSchedule[s.ScheduleID]++
		}
	}
	require.Len(t, perSchedule, schedules)
	for id := range want {
		require.Equal(t, 1, perSchedule[id], "claims of schedule %s", id)
	}
}

func TestAckSlots(t *testing.T) {
	rdb := startRedis(t)

	t.Run("removes acknowledged members", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		a := createSchedule(t, st, newSchedule())
		b := createSchedule(t, st, newSchedule())
		makeDue(t, st, a.ID, 0)
		makeDue(t, st, b.ID, 0)
		c := claimDue(t, st, 0, 100)
		require.Len(t, c.Slots, 2)

		require.NoError(t, st.AckSlots(testContext(t), 0, []ClaimedSlot{c.Slots[0]}))

		members := inflightMembers(t, st, 0)
		require.Len(t, members, 1)
		require.Equal(t, c.Slots[1].member(), members[0].Member)
	})

	t.Run("empty list does nothing", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		require.NoError(t, st.AckSlots(testContext(t), 0, nil))
	})

	t.Run("unknown member ignored", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		ref := ClaimedSlot{SlotRef: SlotRef{ScheduleID: "01JDQ5V9M3K2X8Y7Z6W5T4R3Q2", Slot: time.UnixMilli(1000).UTC(), Generation: 1}, Count: 1}
		require.NoError(t, st.AckSlots(testContext(t), 0, []ClaimedSlot{ref}))
	})
}

func TestReclaimExpired(t *testing.T) {
	rdb := startRedis(t)

	t.Run("takes over expired lease once", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		s := createSchedule(t, st, newSchedule())
		makeDue(t, st, s.ID, 0)
		c, err := st.ClaimDue(testContext(t), 0, 100, time.Second)
		require.NoError(t, err)
		require.Len(t, c.Slots, 1)

		early, err := st.ReclaimExpired(testContext(t), 0, 100, claimLease)
		require.NoError(t, err)
		require.Empty(t, early, "a live lease must not be reclaimed")

		ctx := testContext(t)
		var reclaimed []ClaimedSlot
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			refs, err := st.ReclaimExpired(ctx, 0, 100, claimLease)
			if !assert.NoError(c, err) {
				return
			}
			if assert.NotEmpty(c, refs, "the lease has not ended yet") {
				reclaimed = refs
			}
		}, 10*time.Second, 20*time.Millisecond)

		require.Equal(t, []ClaimedSlot{c.Slots[0]}, reclaimed)

		again, err := st.ReclaimExpired(testContext(t), 0, 100, claimLease)
		require.NoError(t, err)
		require.Empty(t, again, "a reclaimed member must get a new lease")

		members := inflightMembers(t, st, 0)
		require.Len(t, members, 1)
		now := serverTime(t, st)
		require.True(t, msToTime(int64(members[0].Score)).After(now.Add(claimLease-10*time.Second)), "new lease ends at %s", msToTime(int64(members[0].Score)))
	})

	t.Run("acknowledged slot not reclaimed", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		s := createSchedule(t, st, newSchedule())
		makeDue(t, st, s.ID, 0)
		c, err := st.ClaimDue(testContext(t), 0, 100, time.Millisecond)
		require.NoError(t, err)
		require.Len(t, c.Slots, 1)
		require.NoError(t, st.AckSlots(testContext(t), 0, []ClaimedSlot{c.Slots[0]}))

		refs, err := st.ReclaimExpired(testContext(t), 0, 100, claimLease)
		require.NoError(t, err)
		require.Empty(t, refs)
	})

	t.Run("limit respected", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		for i := 0; i < 3; i++ {
			ref := ClaimedSlot{SlotRef: SlotRef{ScheduleID: fmt.Sprintf("01JDQ5V9M3K2X8Y7Z6W5T4R3Q%d", i), Slot: time.UnixMilli(1000).UTC(), Generation: 1}, Count: 1}
			require.NoError(t, rdb.ZAdd(testContext(t), st.keys.InflightKey(0), redis.Z{Score: 1, Member: ref.member()}).Err())
		}

		refs, err := st.ReclaimExpired(testContext(t), 0, 2, claimLease)
		require.NoError(t, err)
		require.Len(t, refs, 2)
		rest, err := st.ReclaimExpired(testContext(t), 0, 2, claimLease)
		require.NoError(t, err)
		require.Len(t, rest, 1)
	})

	t.Run("malformed member removed", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 1})
		good := ClaimedSlot{SlotRef: SlotRef{ScheduleID: "01JDQ5V9M3K2X8Y7Z6W5T4R3Q2", Slot: time.UnixMilli(5000).UTC(), Generation: 3}, Count: 1}
		require.NoError(t, rdb.ZAdd(testContext(t), st.keys.InflightKey(0),
			redis.Z{Score: 1, Member: good.member()},
			redis.Z{Score: 1, Member: "damaged"},
		).Err())

		refs, err := st.ReclaimExpired(testContext(t), 0, 100, claimLease)
		require.ErrorContains(t, err, "damaged")
		require.Equal(t, []ClaimedSlot{good}, refs)

		members := inflightMembers(t, st, 0)
		require.Len(t, members, 1)
		require.Equal(t, good.member(), members[0].Member)
	})
}
