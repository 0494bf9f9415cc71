package store

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
)

// SlotRef names one slot of one schedule, as claimed at a given generation of
// the schedule.
type SlotRef struct {
	ScheduleID string
	// Slot is the grid time of the slot, with millisecond precision.
	Slot       time.Time
	Generation int64
}

// ExecutionID returns the ID of the slot's execution. It is a ULID whose time
// is the slot and whose random part is derived from the schedule ID and the
// slot, so every component derives the same ID and it sorts by slot.
func (r SlotRef) ExecutionID() string {
	ms := r.Slot.UnixMilli()
	sum := sha256.Sum256([]byte(r.ScheduleID + "|" + strconv.FormatInt(ms, 10)))
	var id ulid.ULID
	_ = id.SetTime(uint64(ms))
	_ = id.SetEntropy(sum[:10])
	return id.String()
}

// ClaimedSlot is a range of consecutive slots of one schedule that a
// scheduler claimed and must now enqueue as one task. A range holds one slot
// except when the run_all misfire policy catches up on missed slots.
type ClaimedSlot struct {
	// SlotRef names the first slot of the range.
	SlotRef
	// Count is the number of slots in the range, from Slot every Interval.
	Count int
	// Interval is the schedule's interval.
	Interval time.Duration
	// Timeout and MaxRetry are the schedule's execution options; zero
	// Timeout means the scheduler's default.
	Timeout  time.Duration
	MaxRetry int
}

// Slots returns the slots of the range.
func (c ClaimedSlot) Slots() []SlotRef {
	refs := make([]SlotRef, c.Count)
	for i := range refs {
		refs[i] = SlotRef{ScheduleID: c.ScheduleID, Slot: c.Slot.Add(time.Duration(i) * c.Interval), Generation: c.Generation}
	}
	return refs
}

// member encodes c as an inflight ZSET member.
func (c ClaimedSlot) member() string {
	return c.ScheduleID + "|" + strconv.FormatInt(c.Slot.UnixMilli(), 10) + "|" +
		strconv.FormatInt(c.Generation, 10) + "|" + strconv.Itoa(c.Count)
}

// parseMember decodes an inflight member; members without a count, written
// before ranges existed, hold one slot.
func parseMember(m string) (ClaimedSlot, error) {
	parts := strings.Split(m, "|")
	if len(parts) != 3 && len(parts) != 4 {
		return ClaimedSlot{}, fmt.Errorf("malformed inflight member %q", m)
	}
	slot, err1 := strconv.ParseInt(parts[1], 10, 64)
	gen, err2 := strconv.ParseInt(parts[2], 10, 64)
	count, err3 := 1, error(nil)
	if len(parts) == 4 {
		count, err3 = strconv.Atoi(parts[3])
	}
	if err1 != nil || err2 != nil || err3 != nil || count < 1 {
		return ClaimedSlot{}, fmt.Errorf("malformed inflight member %q", m)
	}
	return ClaimedSlot{
		SlotRef: SlotRef{ScheduleID: parts[0], Slot: msToTime(slot), Generation: gen},
		Count:   count,
	}, nil
}

// Skip reports schedules whose missed slots a claim skipped without
// claiming any (the skip misfire policy).
type Skip struct {
	ScheduleID string
	Skipped    int64
}

// Claim is the result of one ClaimDue call.
type Claim struct {
	// Now is the Redis time at which the claim happened.
	Now time.Time
	// Slots are the claimed ranges.
	Slots []ClaimedSlot
	// Skipped maps each schedule that skipped missed slots to their number.
	Skipped map[string]int64
	// NextDue is the earliest slot left in the partition after the claim;
	// zero when the partition has no active schedule.
	NextDue time.Time
}

// claimFields is the number of values the claim script returns per schedule.
const claimFields = 8

// ClaimDue claims the due slots of up to max schedules of partition p and
// records them as in flight with the given lease. The claim is atomic, so two
// schedulers never claim the same slot. The caller enqueues each range and
// then calls AckSlots; if it stops before that, ReclaimExpired hands the
// ranges to another caller once the lease ends.
func (s *Store) ClaimDue(ctx context.Context, p, max int, lease time.Duration) (Claim, error) {
	return s.claimDue(ctx, p, max, lease, 0)
}

// ClaimDueFenced is ClaimDue for the holder of partition p's lease with the
// fencing token fence (see AcquireLease). It returns ErrFenced and claims
// nothing when another replica acquired the lease since.
func (s *Store) ClaimDueFenced(ctx context.Context, p, max int, lease time.Duration, fence int64) (Claim, error) {
	return s.claimDue(ctx, p, max, lease, fence)
}

func (s *Store) claimDue(ctx context.Context, p, max int, lease time.Duration, fence int64) (Claim, error) {
	keys := []string{s.keys.DueKey(p), s.keys.InflightKey(p)}
	if fence > 0 {
		keys = append(keys, s.keys.LeaseKey(p))
	}
	v, err := claimScript.Run(ctx, s.rdb, keys, s.keys.schedulePrefix(p), max, lease.Milliseconds(), CatchUpMax, fence).Result()
	if err != nil {
		return Claim{}, fmt.Errorf("claim due slots in partition %d: %w", p, err)
	}
	out, err := scriptResult(v)
	if err == nil && len(out) == 2 && asInt64(out[1]) == -2 {
		return Claim{}, fmt.Errorf("claim due slots in partition %d with fencing token %d: %w", p, fence, ErrFenced)
	}
	if err != nil || len(out) < 2 || (len(out)-2)%claimFields != 0 {
		return Claim{}, fmt.Errorf("claim due slots in partition %d: unexpected script reply %v", p, v)
	}

	c := Claim{Now: msToTime(asInt64(out[0]))}
	if next := asInt64(out[1]); next >= 0 {
		c.NextDue = msToTime(next)
	}
	for i := 2; i < len(out); i += claimFields {
		id := asString(out[i])
		if skipped := asInt64(out[i+3]); skipped > 0 {
			if c.Skipped == nil {
				c.Skipped = map[string]int64{}
			}
			c.Skipped[id] = skipped
		}
		count := int(asInt64(out[i+4]))
		if count == 0 {
			continue
		}
		c.Slots = append(c.Slots, ClaimedSlot{
			SlotRef: SlotRef{
				ScheduleID: id,
				Slot:       msToTime(asInt64(out[i+1])),
				Generation: asInt64(out[i+2]),
			},
			Count:    count,
			Interval: time.Duration(asInt64(out[i+5])) * time.Millisecond,
			Timeout:  time.Duration(asInt64(out[i+6])) * time.Millisecond,
			MaxRetry: int(asInt64(out[i+7])),
		})
	}
	return c, nil
}

// AckSlots removes enqueued ranges of partition p from the in-flight set.
func (s *Store) AckSlots(ctx context.Context, p int, slots []ClaimedSlot) error {
	if len(slots) == 0 {
		return nil
	}
	members := make([]any, len(slots))
	for i, r := range slots {
		members[i] = r.member()
	}
	if err := s.rdb.ZRem(ctx, s.keys.InflightKey(p), members...).Err(); err != nil {
		return fmt.Errorf("acknowledge %d slots in partition %d: %w", len(slots), p, err)
	}
	return nil
}

// ReclaimExpired takes over up to max in-flight ranges of partition p whose
// lease has ended, renewing their lease for the caller, who must enqueue them
// and call AckSlots. A range whose enqueue did happen is rejected by asynq as
// a task ID conflict, so the retake never runs a slot twice.
func (s *Store) ReclaimExpired(ctx context.Context, p, max int, lease time.Duration) ([]ClaimedSlot, error) {
	v, err := reclaimScript.Run(ctx, s.rdb, []string{s.keys.InflightKey(p)}, lease.Milliseconds(), max, s.keys.schedulePrefix(p)).Slice()
	if err != nil {
		return nil, fmt.Errorf("reclaim expired slots in partition %d: %w", p, err)
	}
	if len(v)%4 != 0 {
		return nil, fmt.Errorf("reclaim expired slots in partition %d: unexpected script reply %v", p, v)
	}

	claimed := make([]ClaimedSlot, 0, len(v)/4)
	var malformed []any
	for i := 0; i < len(v); i += 4 {
		member := asString(v[i])
		c, err := parseMember(member)
		if err != nil {
			malformed = append(malformed, member)
			continue
		}
		c.Interval = time.Duration(asInt64(v[i+1])) * time.Millisecond
		c.Timeout = time.Duration(asInt64(v[i+2])) * time.Millisecond
		c.MaxRetry = int(asInt64(v[i+3]))
		claimed = append(claimed, c)
	}

	// Only Pulse writes this set, so a member it cannot parse was damaged
	// outside Pulse. Dropping it keeps it from coming back on every pass.
	if len(malformed) > 0 {
		if err := s.rdb.ZRem(ctx, s.keys.InflightKey(p), malformed...).Err(); err != nil {
			return claimed, fmt.Errorf("remove %d malformed inflight members of partition %d: %w", len(malformed), p, err)
		}
		return claimed, fmt.Errorf("reclaim expired slots in partition %d: removed %d malformed members, first %q", p, len(malformed), malformed[0])
	}
	return claimed, nil
}

// CountInflight returns the number of claimed slots of partition p not yet
// acknowledged.
func (s *Store) CountInflight(ctx context.Context, p int) (int64, error) {
	n, err := s.rdb.ZCard(ctx, s.keys.InflightKey(p)).Result()
	if err != nil {
		return 0, fmt.Errorf("count inflight slots in partition %d: %w", p, err)
	}
	return n, nil
}
