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

// member encodes r as an inflight ZSET member.
func (r SlotRef) member() string {
	return r.ScheduleID + "|" + strconv.FormatInt(r.Slot.UnixMilli(), 10) + "|" + strconv.FormatInt(r.Generation, 10)
}

func parseMember(m string) (SlotRef, error) {
	parts := strings.Split(m, "|")
	if len(parts) != 3 {
		return SlotRef{}, fmt.Errorf("malformed inflight member %q", m)
	}
	slot, err1 := strconv.ParseInt(parts[1], 10, 64)
	gen, err2 := strconv.ParseInt(parts[2], 10, 64)
	if err1 != nil || err2 != nil {
		return SlotRef{}, fmt.Errorf("malformed inflight member %q", m)
	}
	return SlotRef{ScheduleID: parts[0], Slot: msToTime(slot), Generation: gen}, nil
}

// ClaimedSlot is a slot that a scheduler claimed and must now enqueue.
type ClaimedSlot struct {
	SlotRef
	// Skipped is the number of earlier grid slots that were missed and will
	// never run, because only the latest missed slot runs.
	Skipped int64
}

// Claim is the result of one ClaimDue call.
type Claim struct {
	// Now is the Redis time at which the claim happened.
	Now   time.Time
	Slots []ClaimedSlot
	// NextDue is the earliest slot left in the partition after the claim;
	// zero when the partition has no active schedule.
	NextDue time.Time
}

// ClaimDue claims up to max due slots of partition p and records them as in
// flight with the given lease. The claim is atomic, so two schedulers never
// claim the same slot. The caller enqueues each slot and then calls AckSlots;
// if it stops before that, ReclaimExpired hands the slots to another caller
// once the lease ends.
func (s *Store) ClaimDue(ctx context.Context, p, max int, lease time.Duration) (Claim, error) {
	keys := []string{s.keys.DueKey(p), s.keys.InflightKey(p)}
	v, err := claimScript.Run(ctx, s.rdb, keys, s.keys.schedulePrefix(p), max, lease.Milliseconds()).Result()
	if err != nil {
		return Claim{}, fmt.Errorf("claim due slots in partition %d: %w", p, err)
	}
	out, err := scriptResult(v)
	if err != nil || len(out) < 2 || (len(out)-2)%4 != 0 {
		return Claim{}, fmt.Errorf("claim due slots in partition %d: unexpected script reply %v", p, v)
	}

	c := Claim{Now: msToTime(asInt64(out[0]))}
	if next := asInt64(out[1]); next >= 0 {
		c.NextDue = msToTime(next)
	}
	for i := 2; i < len(out); i += 4 {
		c.Slots = append(c.Slots, ClaimedSlot{
			SlotRef: SlotRef{
				ScheduleID: asString(out[i]),
				Slot:       msToTime(asInt64(out[i+1])),
				Generation: asInt64(out[i+2]),
			},
			Skipped: asInt64(out[i+3]),
		})
	}
	return c, nil
}

// AckSlots removes enqueued slots of partition p from the in-flight set.
func (s *Store) AckSlots(ctx context.Context, p int, slots []SlotRef) error {
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

// ReclaimExpired takes over up to max in-flight slots of partition p whose
// lease has ended, renewing their lease for the caller, who must enqueue them
// and call AckSlots. A slot whose enqueue did happen is rejected by asynq as a
// task ID conflict, so the retake never runs a slot twice.
func (s *Store) ReclaimExpired(ctx context.Context, p, max int, lease time.Duration) ([]SlotRef, error) {
	members, err := reclaimScript.Run(ctx, s.rdb, []string{s.keys.InflightKey(p)}, lease.Milliseconds(), max).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("reclaim expired slots in partition %d: %w", p, err)
	}
	refs := make([]SlotRef, 0, len(members))
	var malformed []any
	for _, m := range members {
		r, err := parseMember(m)
		if err != nil {
			malformed = append(malformed, m)
			continue
		}
		refs = append(refs, r)
	}

	// Only Pulse writes this set, so a member it cannot parse was damaged
	// outside Pulse. Dropping it keeps it from coming back on every pass.
	if len(malformed) > 0 {
		if err := s.rdb.ZRem(ctx, s.keys.InflightKey(p), malformed...).Err(); err != nil {
			return refs, fmt.Errorf("remove %d malformed inflight members of partition %d: %w", len(malformed), p, err)
		}
		return refs, fmt.Errorf("reclaim expired slots in partition %d: removed %d malformed members, first %q", p, len(malformed), malformed[0])
	}
	return refs, nil
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
