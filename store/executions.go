package store

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
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
	// its worker died less than a running lease ago. The task should be
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

// StartRequest is one delivery of a slot's task to a worker.
type StartRequest struct {
	Slot SlotRef
	// Attempt is 0 for the first delivery and grows with each retry.
	Attempt int
	// RunningLease is how long the schedule's running marker lasts if the
	// worker dies before FinishExecution.
	RunningLease time.Duration
	// Predecessor is the execution ID of the previous slot of the same range,
	// which hands the running marker over to this one; empty otherwise.
	Predecessor string
}

// StartExecution decides whether a delivery of a slot may run and, if so,
// records it as the schedule's latest execution and takes the schedule's
// running marker. The marker makes later slots follow the overlap policy
// while this one runs. It ends with FinishExecution, or with its lease when
// the worker dies.
func (s *Store) StartExecution(ctx context.Context, req StartRequest) (Execution, Verdict, error) {
	r := req.Slot
	p := s.keys.PartitionOf(r.ScheduleID)
	execID := r.ExecutionID()
	keys := []string{s.keys.ScheduleKey(p, r.ScheduleID), s.keys.SpecKey(p, r.ScheduleID)}
	v, err := startScript.Run(ctx, s.rdb, keys,
		r.Slot.UnixMilli(), r.Generation, execID, req.Attempt, req.RunningLease.Milliseconds(), req.Predecessor).Result()
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
		Attempt:      req.Attempt,
		Payload:      sp.Payload,
		MetadataJSON: sp.MetadataJSON,
		StartedAt:    msToTime(asInt64(out[3])),
	}, VerdictRun, nil
}

// FinishRequest is the outcome of one attempt of an execution.
type FinishRequest struct {
	Execution Execution
	Status    ExecutionStatus
	// Error is the error of a failed attempt. Invalid UTF-8 in it is
	// replaced, and it is cut to ErrorMaxBytes on a rune boundary.
	Error string
	// KeepMarker keeps the running marker for the next slot of the same
	// range instead of releasing it.
	KeepMarker bool
}

// FinishResult reports what FinishExecution changed.
type FinishResult struct {
	// Recorded is true when the attempt was still the schedule's latest one,
	// so its status was recorded.
	Recorded bool
	// Paused is true when this failure reached the schedule's
	// pause-after-failures count and paused it.
	Paused bool
}

// FinishExecution records the status of an attempt and releases the
// schedule's running marker. The status is recorded only while the attempt
// is still the schedule's latest one.
func (s *Store) FinishExecution(ctx context.Context, req FinishRequest) (FinishResult, error) {
	e := req.Execution
	p := s.keys.PartitionOf(e.ScheduleID)
	keep := "0"
	if req.KeepMarker {
		keep = "1"
	}
	errText := storedError(req.Error)

	keys := []string{
		s.keys.ScheduleKey(p, e.ScheduleID), s.keys.ErrorKey(p, e.ScheduleID),
		s.keys.DueKey(p), s.keys.PausedKey(p),
	}
	out, err := finishScript.Run(ctx, s.rdb, keys, e.ScheduleID, e.ID, string(req.Status), e.Attempt, keep, errText).Int64Slice()
	if err != nil {
		return FinishResult{}, fmt.Errorf("finish execution %s of schedule %s: %w", e.ID, e.ScheduleID, err)
	}
	if len(out) != 2 {
		return FinishResult{}, fmt.Errorf("finish execution %s of schedule %s: unexpected script reply %v", e.ID, e.ScheduleID, out)
	}
	return FinishResult{Recorded: out[0] == 1, Paused: out[1] == 1}, nil
}

// storedError prepares an error text for storage: it replaces invalid UTF-8,
// because the API sends the text as a protobuf string, and cuts the text to
// ErrorMaxBytes on a rune boundary.
func storedError(text string) string {
	text = strings.ToValidUTF8(text, "\uFFFD")
	if len(text) <= ErrorMaxBytes {
		return text
	}
	cut := ErrorMaxBytes
	for cut > 0 && !utf8.RuneStart(text[cut]) {
		cut--
	}
	return text[:cut]
}

// ReleaseMarker releases the schedule's running marker if the attempt of e
// holds it. A range of slots keeps the marker from one slot to the next;
// this ends it when the next slot does not run.
func (s *Store) ReleaseMarker(ctx context.Context, e Execution) error {
	p := s.keys.PartitionOf(e.ScheduleID)
	if err := releaseScript.Run(ctx, s.rdb, []string{s.keys.ScheduleKey(p, e.ScheduleID)}, e.ID, e.Attempt).Err(); err != nil {
		return fmt.Errorf("release running marker of execution %s of schedule %s: %w", e.ID, e.ScheduleID, err)
	}
	return nil
}
