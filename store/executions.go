package store

import (
	"context"
	"fmt"
	"time"
)

// Verdict is the decision of StartExecution about one delivery of a slot's
// task.
type Verdict string

// The verdicts of StartExecution. Every verdict but VerdictRun means the task
// must be dropped without running its handler.
const (
	// VerdictRun means the execution is recorded as started and may run.
	VerdictRun Verdict = "ok"
	// VerdictMissing means the schedule no longer exists.
	VerdictMissing Verdict = "missing"
	// VerdictPaused means the schedule is paused.
	VerdictPaused Verdict = "paused"
	// VerdictDeleted means the schedule is deleted.
	VerdictDeleted Verdict = "deleted"
	// VerdictStaleGeneration means the schedule was paused, resumed or
	// changed after the slot was claimed.
	VerdictStaleGeneration Verdict = "stale_generation"
	// VerdictStaleSlot means a later slot of the schedule already started.
	VerdictStaleSlot Verdict = "stale_slot"
	// VerdictDuplicate means this slot already ran to an end, or a later
	// attempt of it started.
	VerdictDuplicate Verdict = "duplicate"
	// VerdictBusy means this attempt is still running in another worker, or
	// its worker died less than a running lease ago; the task should be
	// delivered again later.
	VerdictBusy Verdict = "busy"
	// VerdictOverlap means an earlier execution of the schedule is still
	// running.
	VerdictOverlap Verdict = "overlap"
)

// Execution is one slot's execution that a worker may run.
type Execution struct {
	ID           string
	ScheduleID   string
	ATSCode      string
	HandlerName  string
	SourceURL    string
	Slot         time.Time
	Attempt      int
	Payload      []byte
	MetadataJSON string
	// StartedAt is the Redis time at which the execution was recorded.
	StartedAt time.Time
}

// StartExecution decides whether attempt (0 for the first) of the slot r may
// run and, if so, records it as the schedule's latest execution and takes the
// schedule's running marker for runningLease. The marker makes later slots
// skip while this one runs; it ends with FinishExecution or with the lease, in
// case the worker dies.
func (s *Store) StartExecution(ctx context.Context, r SlotRef, attempt int, runningLease time.Duration) (Execution, Verdict, error) {
	p := s.keys.PartitionOf(r.ScheduleID)
	execID := r.ExecutionID()
	keys := []string{s.keys.ScheduleKey(p, r.ScheduleID), s.keys.SpecKey(p, r.ScheduleID)}
	v, err := startScript.Run(ctx, s.rdb, keys,
		r.Slot.UnixMilli(), r.Generation, execID, attempt, runningLease.Milliseconds()).Result()
	if err != nil {
		return Execution{}, "", fmt.Errorf("start execution %s of schedule %s: %w", execID, r.ScheduleID, err)
	}
	out, err := scriptResult(v)
	if err != nil {
		return Execution{}, "", fmt.Errorf("start execution %s of schedule %s: %w", execID, r.ScheduleID, err)
	}

	verdict := Verdict(asString(out[0]))
	if verdict != VerdictRun {
		return Execution{}, verdict, nil
	}
	if len(out) < 4 {
		return Execution{}, "", fmt.Errorf("start execution %s of schedule %s: unexpected script reply %v", execID, r.ScheduleID, out)
	}
	sp, err := decodeSpec([]byte(asString(out[2])))
	if err != nil {
		return Execution{}, "", fmt.Errorf("start execution %s of schedule %s: %w", execID, r.ScheduleID, err)
	}

	return Execution{
		ID:           execID,
		ScheduleID:   r.ScheduleID,
		ATSCode:      asString(out[1]),
		HandlerName:  sp.HandlerName,
		SourceURL:    sp.SourceURL,
		Slot:         r.Slot,
		Attempt:      attempt,
		Payload:      sp.Payload,
		MetadataJSON: sp.MetadataJSON,
		StartedAt:    msToTime(asInt64(out[3])),
	}, VerdictRun, nil
}

// FinishExecution records the status of an execution and releases the
// schedule's running marker. The status is recorded only while the execution
// is still the schedule's latest one; it returns whether it was.
func (s *Store) FinishExecution(ctx context.Context, e Execution, status ExecutionStatus) (bool, error) {
	p := s.keys.PartitionOf(e.ScheduleID)
	n, err := finishScript.Run(ctx, s.rdb, []string{s.keys.ScheduleKey(p, e.ScheduleID)}, e.ID, string(status), e.Attempt).Int()
	if err != nil {
		return false, fmt.Errorf("finish execution %s of schedule %s: %w", e.ID, e.ScheduleID, err)
	}
	return n == 1, nil
}
