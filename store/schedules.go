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
}

// CreateSchedule stores a new active schedule. Its grid is anchored at the
// creation time read from the Redis clock.
func (s *Store) CreateSchedule(ctx context.Context, n NewSchedule) (*Schedule, error) {
	if n.Interval < time.Millisecond {
		return nil, fmt.Errorf("create schedule %s: interval %s is below 1ms", n.ID, n.Interval)
	}
	p := s.keys.PartitionOf(n.ID)
	blob := encodeSpec(spec{
		HandlerName:  n.HandlerName,
		SourceURL:    n.SourceURL,
		MetadataJSON: n.MetadataJSON,
		Payload:      n.Payload,
	})
	runNow := "0"
	if n.RunImmediately {
		runNow = "1"
	}

	keys := []string{s.keys.ScheduleKey(p, n.ID), s.keys.SpecKey(p, n.ID), s.keys.DueKey(p)}
	v, err := createScript.Run(ctx, s.rdb, keys, n.ID, n.ATSCode, n.Interval.Milliseconds(), runNow, blob).Result()
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
		ID:           n.ID,
		ATSCode:      n.ATSCode,
		HandlerName:  n.HandlerName,
		SourceURL:    n.SourceURL,
		Interval:     n.Interval,
		Payload:      n.Payload,
		MetadataJSON: n.MetadataJSON,
		State:        StateActive,
		Anchor:       created,
		NextRunAt:    msToTime(asInt64(out[2])),
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
	var specCmd *redis.StringCmd
	_, err := s.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		fieldsCmd = pipe.HGetAll(ctx, s.keys.ScheduleKey(p, id))
		specCmd = pipe.Get(ctx, s.keys.SpecKey(p, id))
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
	return scheduleFromFields(id, fields, sp), nil
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
	keys := []string{s.keys.ScheduleKey(p, id), s.keys.SpecKey(p, id), s.keys.DueKey(p)}
	v, err := setStateScript.Run(ctx, s.rdb, keys, id, owner, string(target), s.cfg.DeletedRetention.Milliseconds()).Result()
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
