package store

import (
	"encoding/binary"
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
	fieldBuffered      = "bf"  // execution waiting for the running one (overlap buffer_one)
	fieldBufferedUntil = "bu"  // end of that wait's lease, Unix milliseconds
	fieldTimeoutMS     = "to"  // deadline of one attempt, milliseconds
	fieldMaxRetry      = "mr"  // retries after a failed attempt
	fieldMisfire       = "mp"  // MisfirePolicy; absent means MisfireRunLatest
	fieldMisfireWindow = "mw"  // window of MisfireRunAll, milliseconds
	fieldOverlap       = "op"  // OverlapPolicy; absent means OverlapSkip
	fieldPauseAfter    = "pf"  // consecutive failures that pause the schedule; absent means never
	fieldFailures      = "cf"  // consecutive failed executions
	fieldTotalRuns     = "tr"  // executions started, retries not counted
	fieldSkipped       = "sk"  // slots that never ran
	fieldPausedReason  = "pr"  // reason Pulse gave when it paused the schedule itself
	fieldInflight      = "im"  // inflight member of the latest claim; the claim waits while it is in flight
)

// MisfirePolicy decides what happens to the slots of a schedule that were missed
// while no scheduler ran. A slot counts as missed once the slot after it is
// due too.
type MisfirePolicy string

// The misfire policies.
const (
	// MisfireRunLatest runs the latest missed slot once and skips the
	// others. It is the default.
	MisfireRunLatest MisfirePolicy = "run_latest"
	// MisfireSkip skips every missed slot, the latest included; the schedule
	// runs again at its next slot.
	MisfireSkip MisfirePolicy = "skip"
	// MisfireRunAll runs every missed slot within the misfire window, oldest
	// first, one after the other, and skips the older ones.
	MisfireRunAll MisfirePolicy = "run_all"
)

// OverlapPolicy decides what happens to a slot whose schedule's previous
// execution is still running.
type OverlapPolicy string

// The overlap policies.
const (
	// OverlapSkip skips the slot. It is the default.
	OverlapSkip OverlapPolicy = "skip"
	// OverlapAllow runs the slot at once, beside the previous execution.
	OverlapAllow OverlapPolicy = "allow"
	// OverlapBufferOne runs the slot when the previous execution ends; a
	// further slot that comes due meanwhile is skipped.
	OverlapBufferOne OverlapPolicy = "buffer_one"
)

// Limits of the per-schedule options.
const (
	// MisfireWindowDefault is the window of MisfireRunAll when none is set.
	MisfireWindowDefault = time.Hour
	// MisfireWindowMax bounds the window of MisfireRunAll.
	MisfireWindowMax = 24 * time.Hour
	// CatchUpMax bounds the missed slots that MisfireRunAll runs after one
	// outage; older ones are skipped.
	CatchUpMax = 1000
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
	// LastError is the error of the latest failed attempt; empty after a
	// success.
	LastError  string
	Generation int64
	CreatedAt  time.Time
	UpdatedAt  time.Time

	Options

	// ConsecutiveFailures counts failed executions since the latest success.
	ConsecutiveFailures int64
	// TotalRuns counts executions that started, retries not counted.
	TotalRuns int64
	// SkippedSlots counts slots that never ran (misfire and overlap).
	SkippedSlots int64
	// PausedReason is the reason Pulse gave when it paused the schedule
	// itself. It is empty when a client paused it or it is not paused.
	PausedReason string
}

// Options are the per-schedule settings of execution. The zero value of each
// field means its default.
type Options struct {
	// Timeout is the deadline of one attempt of the handler.
	Timeout time.Duration
	// MaxRetry is the number of retries after a failed attempt.
	MaxRetry int
	// Misfire is the misfire policy; empty means MisfireRunLatest.
	Misfire MisfirePolicy
	// MisfireWindow bounds how far back MisfireRunAll runs missed slots;
	// zero means MisfireWindowDefault.
	MisfireWindow time.Duration
	// Overlap is the overlap policy; empty means OverlapSkip.
	Overlap OverlapPolicy
	// PauseAfterFailures pauses the schedule after that many consecutive
	// failed executions; zero means never.
	PauseAfterFailures int
}

// normalized returns o with the default policies spelled out, so readers
// never see an empty policy.
func (o Options) normalized() Options {
	if o.Misfire == "" {
		o.Misfire = MisfireRunLatest
	}
	if o.Overlap == "" {
		o.Overlap = OverlapSkip
	}
	if o.Misfire == MisfireRunAll && o.MisfireWindow == 0 {
		o.MisfireWindow = MisfireWindowDefault
	}
	return o
}

// validate checks o; the api package validates requests first, so an error
// here means a caller bypassed it.
func (o Options) validate() error {
	switch o.Misfire {
	case "", MisfireRunLatest, MisfireSkip, MisfireRunAll:
	default:
		return fmt.Errorf("unknown misfire policy %q", o.Misfire)
	}
	switch o.Overlap {
	case "", OverlapSkip, OverlapAllow, OverlapBufferOne:
	default:
		return fmt.Errorf("unknown overlap policy %q", o.Overlap)
	}
	switch {
	case o.Timeout < 0:
		return fmt.Errorf("timeout %s is negative", o.Timeout)
	case o.MaxRetry < 0:
		return fmt.Errorf("max retry %d is negative", o.MaxRetry)
	case o.MisfireWindow < 0 || o.MisfireWindow > MisfireWindowMax:
		return fmt.Errorf("misfire window %s is out of range: it must be between 0 and %s", o.MisfireWindow, MisfireWindowMax)
	case o.PauseAfterFailures < 0:
		return fmt.Errorf("pause after failures %d is negative", o.PauseAfterFailures)
	}
	return nil
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

// encodeSpec encodes s as a version byte and four length-prefixed fields. It
// is smaller than JSON because the payload is stored as is, not as base64.
func encodeSpec(s spec) []byte {
	size := 1 + 4*binary.MaxVarintLen64 + len(s.HandlerName) + len(s.SourceURL) + len(s.MetadataJSON) + len(s.Payload)
	b := make([]byte, 0, size)
	b = append(b, specVersion)
	for _, field := range [][]byte{[]byte(s.HandlerName), []byte(s.SourceURL), []byte(s.MetadataJSON), s.Payload} {
		b = binary.AppendUvarint(b, uint64(len(field)))
		b = append(b, field...)
	}
	return b
}

var errBadSpec = fmt.Errorf("%w: malformed schedule spec", ErrCorrupt)

// decodeSpec decodes what encodeSpec produced. A blob that is cut short or
// has bytes after the last field is malformed.
func decodeSpec(b []byte) (spec, error) {
	if len(b) == 0 || b[0] != specVersion {
		return spec{}, fmt.Errorf("%w: unknown version", errBadSpec)
	}
	b = b[1:]

	var fields [4][]byte
	for i := range fields {
		n, read := binary.Uvarint(b)
		if read <= 0 || uint64(len(b)-read) < n {
			return spec{}, fmt.Errorf("%w: field %d is truncated", errBadSpec, i)
		}
		fields[i] = b[read : read+int(n)]
		b = b[read+int(n):]
	}
	if len(b) != 0 {
		return spec{}, fmt.Errorf("%w: %d bytes after the last field", errBadSpec, len(b))
	}

	return spec{
		HandlerName:  string(fields[0]),
		SourceURL:    string(fields[1]),
		MetadataJSON: string(fields[2]),
		Payload:      append([]byte(nil), fields[3]...),
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

// Final reports whether no further attempt follows the status.
func (s ExecutionStatus) Final() bool {
	return s == StatusSucceeded || s == StatusFailed
}

// ErrorMaxBytes bounds the stored error of an attempt.
const ErrorMaxBytes = 2048

// msToTime converts Unix milliseconds to UTC time; 0 is the zero time.
func msToTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}
