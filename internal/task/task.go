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

// payload is the JSON body of a slot task. It names the slot only: the worker
// reads the schedule itself from Redis when the task starts, so a paused,
// deleted or changed schedule is seen.
type payload struct {
	ScheduleID string `json:"schedule_id"`
	SlotMS     int64  `json:"slot_ms"`
	Generation int64  `json:"generation"`
}

// Encode returns the task payload of a slot.
func Encode(r store.SlotRef) []byte {
	b, _ := json.Marshal(payload{ScheduleID: r.ScheduleID, SlotMS: r.Slot.UnixMilli(), Generation: r.Generation})
	return b
}

// Decode parses a task payload made by Encode.
func Decode(b []byte) (store.SlotRef, error) {
	var p payload
	if err := json.Unmarshal(b, &p); err != nil {
		return store.SlotRef{}, fmt.Errorf("decode slot task payload: %w", err)
	}
	if p.ScheduleID == "" || p.SlotMS <= 0 || p.Generation <= 0 {
		return store.SlotRef{}, fmt.Errorf("decode slot task payload: schedule_id, slot_ms and generation are required, got %s", b)
	}
	return store.SlotRef{ScheduleID: p.ScheduleID, Slot: time.UnixMilli(p.SlotMS).UTC(), Generation: p.Generation}, nil
}
