// Package task defines the asynq task that carries slots of a schedule from
// the scheduler to the workers.
package task

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/pulse-sched/pulse/store"
)

// TypeSlot is the asynq task type of a slot.
const TypeSlot = "pulse:slot"

// Slot is the content of a slot task: one slot, or a range of consecutive
// slots that a worker runs in order (the run_all misfire policy). It names
// the slots only: the worker reads the schedule itself from Redis when each
// slot starts, so a paused, deleted or changed schedule is seen.
type Slot struct {
	// SlotRef names the first slot.
	store.SlotRef
	// Count is the number of slots, from the first every Interval; at least 1.
	Count    int
	Interval time.Duration
	// Timeout is the deadline of one attempt of one slot.
	Timeout time.Duration
	// MaxRetry is the number of retries after a failed attempt.
	MaxRetry int
}

// Slots returns the slots of the task in order.
func (s Slot) Slots() []store.SlotRef {
	return store.ClaimedSlot{SlotRef: s.SlotRef, Count: s.Count, Interval: s.Interval}.Slots()
}

// AsynqMaxRetry is the retry count to give asynq: one more than MaxRetry.
// asynq v0.25.1 archives a task whose retry count has reached its maximum
// before it checks whether the error counts as a failure, so without the spare
// retry an interrupted or busy last attempt would be archived. The worker
// ends the last real attempt itself, with asynq.SkipRetry.
func (s Slot) AsynqMaxRetry() int {
	return s.MaxRetry + 1
}

// AsynqTimeoutGrace is added to the deadline that asynq gives a task, so
// that the worker's own deadline of each attempt ends a handler that runs
// too long first. The worker then records that attempt's outcome and
// returns it to asynq. Were asynq's deadline the first, asynq would count
// the attempt as failed on its own while the worker records it too, so a
// timed-out last attempt would be recorded twice.
const AsynqTimeoutGrace = 5 * time.Second

// AsynqTimeout is the deadline to give asynq for the whole task: one
// attempt's timeout for each slot, plus AsynqTimeoutGrace.
func (s Slot) AsynqTimeout() time.Duration {
	return time.Duration(s.Count)*s.Timeout + AsynqTimeoutGrace
}

// payload is the JSON body of a slot task.
type payload struct {
	ScheduleID string `json:"schedule_id"`
	SlotMS     int64  `json:"slot_ms"`
	Generation int64  `json:"generation"`
	Count      int    `json:"count,omitempty"`
	IntervalMS int64  `json:"interval_ms,omitempty"`
	TimeoutMS  int64  `json:"timeout_ms"`
	MaxRetry   int    `json:"max_retry"`
}

// Encode returns the task payload of a slot.
func Encode(s Slot) []byte {
	p := payload{
		ScheduleID: s.ScheduleID,
		SlotMS:     s.Slot.UnixMilli(),
		Generation: s.Generation,
		TimeoutMS:  s.Timeout.Milliseconds(),
		MaxRetry:   s.MaxRetry,
	}
	if s.Count > 1 {
		p.Count = s.Count
		p.IntervalMS = s.Interval.Milliseconds()
	}
	b, _ := json.Marshal(p)
	return b
}

// Decode parses a task payload made by Encode.
func Decode(b []byte) (Slot, error) {
	var p payload
	if err := json.Unmarshal(b, &p); err != nil {
		return Slot{}, fmt.Errorf("decode slot task payload: %w", err)
	}
	if p.Count == 0 {
		p.Count = 1
	}
	switch {
	case p.ScheduleID == "" || p.SlotMS <= 0 || p.Generation <= 0:
		return Slot{}, fmt.Errorf("decode slot task payload: schedule_id, slot_ms and generation are required, got %s", b)
	case p.Count < 1 || (p.Count > 1 && p.IntervalMS <= 0):
		return Slot{}, fmt.Errorf("decode slot task payload: a range needs a positive count and interval, got %s", b)
	case p.MaxRetry < 0 || p.TimeoutMS <= 0:
		return Slot{}, fmt.Errorf("decode slot task payload: max_retry must not be negative and timeout_ms must be positive, got %s", b)
	}
	return Slot{
		SlotRef:  store.SlotRef{ScheduleID: p.ScheduleID, Slot: time.UnixMilli(p.SlotMS).UTC(), Generation: p.Generation},
		Count:    p.Count,
		Interval: time.Duration(p.IntervalMS) * time.Millisecond,
		Timeout:  time.Duration(p.TimeoutMS) * time.Millisecond,
		MaxRetry: p.MaxRetry,
	}, nil
}
