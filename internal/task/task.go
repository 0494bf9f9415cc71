// Package task defines the asynq task that carries one slot of a schedule
// from the scheduler to the workers.
package task

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/pulse-sched/pulse/store"
)

// TypeSlot is the asynq task type of a slot.
const TypeSlot = "pulse:slot"

// Slot is what a slot task carries. It names the slot only: the worker reads
// the schedule itself from Redis when the task starts, so a paused, deleted
// or changed schedule is seen.
type Slot struct {
	store.SlotRef
	// MaxRetry is the number of retries after a failed attempt.
	MaxRetry int
}

// AsynqMaxRetry is the retry count to give asynq for a slot: one more than
// MaxRetry. asynq v0.25.1 archives a task whose retry count has reached its
// maximum before it asks whether the error counts as a failure, so without
// the spare retry an interrupted or busy last attempt would be archived. The
// worker ends the last real attempt itself, with asynq.SkipRetry.
func (s Slot) AsynqMaxRetry() int {
	return s.MaxRetry + 1
}

// payload is the JSON body of a slot task.
type payload struct {
	ScheduleID string `json:"schedule_id"`
	SlotMS     int64  `json:"slot_ms"`
	Generation int64  `json:"generation"`
	MaxRetry   int    `json:"max_retry"`
}

// Encode returns the task payload of a slot.
func Encode(s Slot) []byte {
	b, _ := json.Marshal(payload{
		ScheduleID: s.ScheduleID,
		SlotMS:     s.Slot.UnixMilli(),
		Generation: s.Generation,
		MaxRetry:   s.MaxRetry,
	})
	return b
}

// Decode parses a task payload made by Encode.
func Decode(b []byte) (Slot, error) {
	var p payload
	if err := json.Unmarshal(b, &p); err != nil {
		return Slot{}, fmt.Errorf("decode slot task payload: %w", err)
	}
	if p.ScheduleID == "" || p.SlotMS <= 0 || p.Generation <= 0 || p.MaxRetry < 0 {
		return Slot{}, fmt.Errorf("decode slot task payload: schedule_id, slot_ms and generation are required and max_retry must not be negative, got %s", b)
	}
	return Slot{
		SlotRef:  store.SlotRef{ScheduleID: p.ScheduleID, Slot: time.UnixMilli(p.SlotMS).UTC(), Generation: p.Generation},
		MaxRetry: p.MaxRetry,
	}, nil
}
