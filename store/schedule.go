package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// State is the lifecycle state of a schedule.
type State string

// The states of a schedule. Only active schedules fire.
const (
	StateActive  State = "active"
	StatePaused  State = "paused"
	StateDeleted State = "deleted"
)

// Fields of the schedule HASH (ScheduleKey). The names are short because
// every schedule stores them: Redis keeps the hash in its compact encoding
// only while every value stays at or under 64 bytes.
const (
	fieldOwner         = "ats" // ats_code of the owning plugin
	fieldState         = "st"  // State
	fieldIntervalMS    = "iv"  // interval in milliseconds
	fieldAnchorMS      = "an"  // grid anchor, Unix milliseconds
	fieldNextMS        = "nx"  // next slot, Unix milliseconds; absent unless active
	fieldGeneration    = "gen" // bumped on every state change, so stale tasks are dropped
	fieldCreatedMS     = "ca"  // creation time, Unix milliseconds
	fieldUpdatedMS     = "ua"  // time of the latest change, Unix milliseconds
	fieldLastSlotMS    = "ls"  // slot of the latest execution that started
	fieldLastExecution = "lx"  // ID of the latest execution that started
	fieldLastAttempt   = "la"  // attempt number (0 first) of that execution
	fieldLastStatus    = "lo"  // ExecutionStatus of that execution
	fieldRunningExec   = "rx"  // execution that holds the running marker
	fieldRunningTry    = "ra"  // attempt of that execution
	fieldRunningUntil  = "ru"  // end of the running marker's lease, Unix milliseconds
)

// Schedule is one schedule as stored in Redis.
type Schedule struct {
	ID          string
	ATSCode     string
	HandlerName string
	SourceURL   string
	Interval    time.Duration
	Payload     []byte
	// MetadataJSON is the metadata as a JSON object with sorted keys.
	MetadataJSON string
	State        State
	// Anchor is the origin of the schedule's grid: slots lie at
	// Anchor + k*Interval.
	Anchor time.Time
	// NextRunAt is the next slot; zero unless the schedule is active.
	NextRunAt time.Time
	// LastRunAt is the slot of the latest execution that started; zero before
	// the first one.
	LastRunAt       time.Time
	LastExecutionID string
	LastStatus      ExecutionStatus
	Generation      int64
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// spec is the immutable part of a schedule, stored as one string (SpecKey).
type spec struct {
	HandlerName  string
	SourceURL    string
	MetadataJSON string
	Payload      []byte
}

// specVersion is the first byte of an encoded spec.
const specVersion = 1

// encodeSpec encodes s as a version byte, three length-prefixed strings and
// the payload, which runs to the end. It is smaller than JSON because the
// payload is stored as is, not as base64.
func encodeSpec(s spec) []byte {
	size := 1 + 3*binary.MaxVarintLen64 + len(s.HandlerName) + len(s.SourceURL) + len(s.MetadataJSON) + len(s.Payload)
	b := make([]byte, 0, size)
	b = append(b, specVersion)
	for _, field := range []string{s.HandlerName, s.SourceURL, s.MetadataJSON} {
		b = binary.AppendUvarint(b, uint64(len(field)))
		b = append(b, field...)
	}
	return append(b, s.Payload...)
}

var errBadSpec = errors.New("malformed schedule spec")

// decodeSpec decodes what encodeSpec produced.
func decodeSpec(b []byte) (spec, error) {
	if len(b) == 0 || b[0] != specVersion {
		return spec{}, fmt.Errorf("%w: unknown version", errBadSpec)
	}
	b = b[1:]

	var fields [3]string
	for i := range fields {
		n, read := binary.Uvarint(b)
		if read <= 0 || uint64(len(b)-read) < n {
			return spec{}, fmt.Errorf("%w: field %d is truncated", errBadSpec, i)
		}
		fields[i] = string(b[read : read+int(n)])
		b = b[read+int(n):]
	}

	payload := make([]byte, len(b))
	copy(payload, b)
	return spec{
		HandlerName:  fields[0],
		SourceURL:    fields[1],
		MetadataJSON: fields[2],
		Payload:      payload,
	}, nil
}

// ExecutionStatus is the status of a schedule's latest execution.
type ExecutionStatus string

// The statuses of an execution.
const (
	// StatusRunning means the handler has started and not yet returned.
	StatusRunning ExecutionStatus = "running"
	// StatusSucceeded means the handler returned without an error.
	StatusSucceeded ExecutionStatus = "succeeded"
	// StatusRetrying means the handler failed and asynq will try again.
	StatusRetrying ExecutionStatus = "retrying"
	// StatusFailed means the handler failed and no attempt is left.
	StatusFailed ExecutionStatus = "failed"
	// StatusInterrupted means the worker stopped before the handler returned,
	// so asynq delivers the task again.
	StatusInterrupted ExecutionStatus = "interrupted"
)

// msToTime converts Unix milliseconds to UTC time; 0 is the zero time.
func msToTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}
