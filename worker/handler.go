package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/pulse-sched/pulse/store"
)

// Execution is one run of a schedule's handler for one slot.
type Execution struct {
	// ID is the same for every attempt of a slot; it is derived from the
	// schedule ID and the slot.
	ID          string
	ScheduleID  string
	ATSCode     string
	HandlerName string
	// SourceURL is the endpoint of the owning plugin, which runs the
	// handler when the worker has none of that name. It is empty when the
	// plugin had no endpoint when the schedule was created.
	SourceURL string
	// Slot is the grid time this execution is for.
	Slot time.Time
	// Attempt is 0 for the first attempt and grows with each retry.
	Attempt  int
	Payload  []byte
	Metadata map[string]string
}

// HandlerFunc runs one execution. It should return when ctx ends, which
// happens at the task timeout or when the worker stops. A returned error is
// retried with backoff unless it is wrapped with Permanent.
type HandlerFunc func(ctx context.Context, e *Execution) error

// ErrPermanent marks a failure that a retry cannot fix; see Permanent.
var ErrPermanent = errors.New("permanent failure")

// Permanent wraps err so that the execution fails at once, without retries.
func Permanent(err error) error {
	return &permanentError{err: err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }

func (e *permanentError) Unwrap() []error { return []error{e.err, ErrPermanent} }

// BuiltinHandlerNames returns the names of the handlers that every worker
// has, sorted.
func BuiltinHandlerNames() []string {
	return []string{LogHandlerName, SleepHandlerName}
}

// LogHandlerName is the name of the built-in handler that only logs.
const LogHandlerName = "pulse.log"

// logHandler is the built-in pulse.log handler: it logs the execution and
// the payload size, never the payload itself.
func logHandler(logger *slog.Logger) HandlerFunc {
	return func(ctx context.Context, e *Execution) error {
		logger.InfoContext(ctx, "pulse.log handler ran",
			"schedule_id", e.ScheduleID, "execution_id", e.ID, "slot", e.Slot,
			"attempt", e.Attempt, "payload_bytes", len(e.Payload))
		return nil
	}
}

// SleepHandlerName is the name of the built-in handler that waits.
const SleepHandlerName = "pulse.sleep"

// sleepHandler is the built-in pulse.sleep handler: it waits for the
// duration in metadata key "duration" (a Go duration such as "300ms",
// default 1s), or until its context ends, then logs like pulse.log. It
// replaces real work when trying out timeouts, overlap and load.
func sleepHandler(logger *slog.Logger) HandlerFunc {
	return func(ctx context.Context, e *Execution) error {
		d := time.Second
		if raw, ok := e.Metadata["duration"]; ok {
			parsed, err := time.ParseDuration(raw)
			if err != nil || parsed < 0 {
				return Permanent(fmt.Errorf("metadata duration %q is invalid: it must be a non-negative Go duration such as 300ms", raw))
			}
			d = parsed
		}

		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		logger.InfoContext(ctx, "pulse.sleep handler ran",
			"schedule_id", e.ScheduleID, "execution_id", e.ID, "slot", e.Slot,
			"attempt", e.Attempt, "slept", d.String())
		return nil
	}
}

func newExecution(e store.Execution) *Execution {
	metadata := map[string]string{}
	if e.MetadataJSON != "" {
		// The API wrote this JSON from a map[string]string, so it decodes.
		_ = json.Unmarshal([]byte(e.MetadataJSON), &metadata)
	}
	return &Execution{
		ID:          e.ID,
		ScheduleID:  e.ScheduleID,
		ATSCode:     e.ATSCode,
		HandlerName: e.HandlerName,
		SourceURL:   e.SourceURL,
		Slot:        e.Slot,
		Attempt:     e.Attempt,
		Payload:     e.Payload,
		Metadata:    metadata,
	}
}
