package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// NewSchedule is the definition of a schedule to create.
type NewSchedule struct {
	// ID must be unique; the api package makes ULIDs.
	ID          string
	ATSCode     string
	HandlerName string
	SourceURL   string
	// Interval is the distance between slots, a whole number of milliseconds.
	Interval time.Duration
	Payload  []byte
	// MetadataJSON is the metadata as a JSON object with sorted keys.
	MetadataJSON string
	// RunImmediately makes the first slot the creation time instead of one
	// interval later.
	RunImmediately bool
	// StartAt, when set, is the anchor of the grid and the first slot. A
	// time that has passed by the Redis clock means the creation time.
	StartAt time.Time
	// Options are the schedule's execution settings. A zero Timeout means
	// the scheduler's default; MaxRetry is stored as given, so zero means no
	// retry.
	Options Options
}

// CreateSchedule stores a new active schedule. Its grid is anchored at the
// creation time read from the Redis clock.
func (s *Store) CreateSchedule(ctx context.Context, n NewSchedule) (*Schedule, error) {
	if n.Interval < time.Millisecond {
		return nil, fmt.Errorf("create schedule %s: interval %s is below 1ms", n.ID, n.Interval)
	}
	if err := n.Options.validate(); err != nil {
		return nil, fmt.Errorf("create schedule %s: %w", n.ID, err)
	}
	p := s.keys.PartitionOf(n.ID)
	blob := encodeSpec(spec{
		HandlerName:  n.HandlerName,
		SourceURL:    n.SourceURL,
		MetadataJSON: n.MetadataJSON,
		Payload:      n.Payload,
	})
	mode, anchor := "next", int64(0)
	switch {
	case !n.StartAt.IsZero():
		mode, anchor = "at", n.StartAt.UnixMilli()
	case n.RunImmediately:
		mode = "now"
	}

	o := n.Options
	keys := []string{s.keys.ScheduleKey(p, n.ID), s.keys.SpecKey(p, n.ID), s.keys.DueKey(p), s.keys.OwnersKey(p)}
	v, err := s.runMutation(ctx, createScript, keys[0], keys, n.ID, n.ATSCode, n.Interval.Milliseconds(), mode, blob, anchor,
		o.Timeout.Milliseconds(), o.MaxRetry, string(o.Misfire), o.MisfireWindow.Milliseconds(),
		string(o.Overlap), o.PauseAfterFailures)
	if err != nil {
		return nil, fmt.Errorf("create schedule %s: %w", n.ID, err)
	}
	out, err := scriptResult(v)
	if err != nil {
		return nil, fmt.Errorf("create schedule %s: %w", n.ID, err)
	}
	if asString(out[0]) == "exists" {
		return nil, fmt.Errorf("create schedule %s: %w", n.ID, ErrAlreadyExists)
	}

	created := msToTime(asInt64(out[1]))
	return &Schedule{
		Options:      o.normalized(),
		ID:           n.ID,
		ATSCode:      n.ATSCode,
		HandlerName:  n.HandlerName,
		SourceURL:    n.SourceURL,
		Interval:     n.Interval,
		Payload:      n.Payload,
		MetadataJSON: n.MetadataJSON,
		State:        StateActive,
		Anchor:       msToTime(asInt64(out[2])),
		NextRunAt:    msToTime(asInt64(out[3])),
		Generation:   1,
		CreatedAt:    created,
		UpdatedAt:    created,
	}, nil
}

// GetSchedule reads a schedule. owner limits the read to the schedules of one
// plugin; another plugin's schedule returns ErrNotFound. An empty owner reads
// any schedule.
func (s *Store) GetSchedule(ctx context.Context, id, owner string) (*Schedule, error) {
	p := s.keys.PartitionOf(id)

	// MULTI keeps the two reads consistent with each other; both keys share
	// one hash tag, so this works on a Redis Cluster too.
	var fieldsCmd *redis.MapStringStringCmd
	var specCmd, errorCmd *redis.StringCmd
	_, err := s.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		fieldsCmd = pipe.HGetAll(ctx, s.keys.ScheduleKey(p, id))
		specCmd = pipe.Get(ctx, s.keys.SpecKey(p, id))
		errorCmd = pipe.Get(ctx, s.keys.ErrorKey(p, id))
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("get schedule %s: %w", id, err)
	}

	fields := fieldsCmd.Val()
	if len(fields) == 0 || (owner != "" && fields[fieldOwner] != owner) {
		return nil, fmt.Errorf("get schedule %s: %w", id, ErrNotFound)
	}
	sp, err := decodeSpec([]byte(specCmd.Val()))
	if err != nil {
		return nil, fmt.Errorf("get schedule %s: %w", id, err)
	}
	sched := scheduleFromFields(id, fields, sp)
	sched.LastError = errorCmd.Val()
	return sched, nil
}

func scheduleFromFields(id string, f map[string]string, sp spec) *Schedule {
	ms := func(name string) int64 {
		n, _ := strconv.ParseInt(f[name], 10, 64)
		return n
	}
	return &Schedule{
		ID:              id,
		ATSCode:         f[fieldOwner],
		HandlerName:     sp.HandlerName,
		SourceURL:       sp.SourceURL,
		Interval:        time.Duration(ms(fieldIntervalMS)) * time.Millisecond,
		Payload:         sp.Payload,
		MetadataJSON:    sp.MetadataJSON,
		State:           State(f[fieldState]),
		Anchor:          msToTime(ms(fieldAnchorMS)),
		NextRunAt:       msToTime(ms(fieldNextMS)),
		LastRunAt:       msToTime(ms(fieldLastSlotMS)),
		LastExecutionID: f[fieldLastExecution],
		LastStatus:      ExecutionStatus(f[fieldLastStatus]),
		Generation:      ms(fieldGeneration),
		CreatedAt:       msToTime(ms(fieldCreatedMS)),
		UpdatedAt:       msToTime(ms(fieldUpdatedMS)),
		Options: Options{
			Timeout:            time.Duration(ms(fieldTimeoutMS)) * time.Millisecond,
			MaxRetry:           int(ms(fieldMaxRetry)),
			Misfire:            MisfirePolicy(f[fieldMisfire]),
			MisfireWindow:      time.Duration(ms(fieldMisfireWindow)) * time.Millisecond,
			Overlap:            OverlapPolicy(f[fieldOverlap]),
			PauseAfterFailures: int(ms(fieldPauseAfter)),
		}.normalized(),
		ConsecutiveFailures: ms(fieldFailures),
		TotalRuns:           ms(fieldTotalRuns),
		SkippedSlots:        ms(fieldSkipped),
		PausedReason:        f[fieldPausedReason],
	}
}

// PauseSchedule pauses a schedule: it leaves the due set and the tasks already
// enqueued for it are dropped by the workers. It returns whether the state
// changed; pausing a paused schedule succeeds without a change. A deleted
// schedule returns ErrDeleted.
func (s *Store) PauseSchedule(ctx context.Context, id, owner string) (bool, error) {
	return s.setState(ctx, id, owner, StatePaused)
}

// ResumeSchedule makes a paused schedule active again. Its next slot is the
// first grid slot after now, so the slots missed while paused never run. It
// returns whether the state changed. A deleted schedule returns ErrDeleted.
func (s *Store) ResumeSchedule(ctx context.Context, id, owner string) (bool, error) {
	return s.setState(ctx, id, owner, StateActive)
}

// DeleteSchedule soft-deletes a schedule: it never fires again and Redis
// removes its record after the deleted retention. It returns whether the
// state changed; deleting a deleted schedule succeeds without a change.
func (s *Store) DeleteSchedule(ctx context.Context, id, owner string) (bool, error) {
	return s.setState(ctx, id, owner, StateDeleted)
}

func (s *Store) setState(ctx context.Context, id, owner string, target State) (bool, error) {
	p := s.keys.PartitionOf(id)
	keys := []string{
		s.keys.ScheduleKey(p, id), s.keys.SpecKey(p, id), s.keys.DueKey(p),
		s.keys.PausedKey(p), s.keys.DeletedKey(p), s.keys.OwnersKey(p), s.keys.ErrorKey(p, id),
	}
	v, err := s.runMutation(ctx, setStateScript, keys[0], keys, id, owner, string(target), s.cfg.DeletedRetention.Milliseconds())
	if err != nil {
		return false, fmt.Errorf("set schedule %s to %s: %w", id, target, err)
	}
	out, err := scriptResult(v)
	if err != nil {
		return false, fmt.Errorf("set schedule %s to %s: %w", id, target, err)
	}

	switch asString(out[0]) {
	case "ok":
		return asInt64(out[1]) == 1, nil
	case "not_found":
		return false, fmt.Errorf("set schedule %s to %s: %w", id, target, ErrNotFound)
	case "deleted":
		return false, fmt.Errorf("set schedule %s to %s: %w", id, target, ErrDeleted)
	default:
		return false, fmt.Errorf("set schedule %s to %s: unexpected script reply %v", id, target, out)
	}
}
