// Package store owns Pulse's Redis schema: every key, every Lua script and the
// schedule repository. The api, scheduler and worker packages reach Redis only
// through it.
package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Errors that callers branch on.
var (
	// ErrNotFound means the schedule does not exist or belongs to another
	// plugin. Both cases return the same error, so the IDs of other plugins
	// stay hidden.
	ErrNotFound = errors.New("schedule not found")
	// ErrDeleted means the schedule is deleted, so it cannot be paused or
	// resumed.
	ErrDeleted = errors.New("schedule is deleted")
	// ErrAlreadyExists means a schedule with the same ID exists.
	ErrAlreadyExists = errors.New("schedule already exists")
	// ErrCorrupt means a record in Redis cannot be decoded; Pulse never
	// writes one, so something else changed it.
	ErrCorrupt = errors.New("corrupt schedule record")
	// ErrPartitionMismatch means Redis holds data written with another
	// partition count.
	ErrPartitionMismatch = errors.New("partition count mismatch")
)

// schemaVersion is the layout version stored in the meta hash.
const schemaVersion = 1

// Config sets up a Store.
type Config struct {
	// Prefix starts every key. Default "pulse".
	Prefix string
	// Partitions is the number of partitions that schedules are spread over.
	// It is fixed when the first Pulse process starts on an empty Redis; a
	// process configured with another count refuses to start. Default 16.
	Partitions int
	// DeletedRetention is how long a deleted schedule stays readable before
	// Redis removes it. Default 7 days.
	DeletedRetention time.Duration
	// WaitReplicas, when above zero, makes every create, pause, resume and
	// delete wait until that many replicas have the change (Redis WAIT), and
	// return ErrNotReplicated when fewer confirm it within WaitTimeout.
	WaitReplicas int
	// WaitTimeout bounds the wait for replicas. Default 1s.
	WaitTimeout time.Duration
}

// Defaults of Config.
const (
	PrefixDefault           = "pulse"
	PartitionsDefault       = 16
	DeletedRetentionDefault = 7 * 24 * time.Hour
	// PartitionsMax bounds Config.Partitions; each scheduler polls every
	// partition it owns, so very high counts only add load.
	PartitionsMax = 4096
)

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = PrefixDefault
	}
	if c.Partitions == 0 {
		c.Partitions = PartitionsDefault
	}
	if c.DeletedRetention == 0 {
		c.DeletedRetention = DeletedRetentionDefault
	}
	if c.WaitTimeout == 0 {
		c.WaitTimeout = WaitTimeoutDefault
	}
	return c
}

func (c Config) validate() error {
	if c.Partitions < 1 || c.Partitions > PartitionsMax {
		return fmt.Errorf("partitions %d is out of range: it must be between 1 and %d", c.Partitions, PartitionsMax)
	}
	if c.DeletedRetention < time.Second {
		return fmt.Errorf("deleted retention %s is too short: it must be at least 1s", c.DeletedRetention)
	}
	if c.WaitReplicas < 0 {
		return fmt.Errorf("wait replicas %d is invalid: it must not be negative", c.WaitReplicas)
	}
	if c.WaitTimeout < time.Millisecond {
		return fmt.Errorf("wait timeout %s is too short: it must be at least 1ms", c.WaitTimeout)
	}
	return nil
}

// Store is the schedule repository on Redis. It is safe for concurrent use.
type Store struct {
	rdb  redis.UniversalClient
	keys Keys
	cfg  Config
}

// New returns a Store on rdb. Call Init before the first use.
func New(rdb redis.UniversalClient, cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Store{rdb: rdb, keys: NewKeys(cfg.Prefix, cfg.Partitions), cfg: cfg}, nil
}

// Keys returns the key builder of the store.
func (s *Store) Keys() Keys { return s.keys }

// Client returns the Redis client of the store.
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// Init records the partition count on first use and checks it on every later
// start, because a changed count would map schedules to other partitions.
func (s *Store) Init(ctx context.Context) error {
	key := s.keys.MetaKey()
	if err := s.rdb.HSetNX(ctx, key, "partitions", s.cfg.Partitions).Err(); err != nil {
		return fmt.Errorf("record partition count: %w", err)
	}
	if err := s.rdb.HSetNX(ctx, key, "schema", schemaVersion).Err(); err != nil {
		return fmt.Errorf("record schema version: %w", err)
	}

	stored, err := s.rdb.HMGet(ctx, key, "partitions", "schema").Result()
	if err != nil {
		return fmt.Errorf("read partition count: %w", err)
	}
	partitions, _ := strconv.Atoi(fmt.Sprint(stored[0]))
	if partitions != s.cfg.Partitions {
		return fmt.Errorf("%w: Redis contains schedules in %d partitions (key %s) but this process is configured with %d; start it with --partitions %d",
			ErrPartitionMismatch, partitions, key, s.cfg.Partitions, partitions)
	}
	schema, _ := strconv.Atoi(fmt.Sprint(stored[1]))
	if schema != schemaVersion {
		return fmt.Errorf("redis contains Pulse schema version %d (key %s), but this binary supports version %d", schema, key, schemaVersion)
	}
	return nil
}

// ServerTime returns the Redis server time, the clock that all due decisions
// use.
func (s *Store) ServerTime(ctx context.Context) (time.Time, error) {
	t, err := s.rdb.Time(ctx).Result()
	if err != nil {
		return time.Time{}, fmt.Errorf("read redis time: %w", err)
	}
	return t.UTC(), nil
}

// Ping checks that Redis responds.
func (s *Store) Ping(ctx context.Context) error {
	return s.rdb.Ping(ctx).Err()
}

// scriptResult converts the reply of a script that returns a table.
func scriptResult(v any) ([]any, error) {
	out, ok := v.([]any)
	if !ok || len(out) == 0 {
		return nil, fmt.Errorf("unexpected script reply %T", v)
	}
	return out, nil
}

func asString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	case nil:
		return ""
	default:
		return fmt.Sprint(x)
	}
}

func asInt64(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	default:
		return 0
	}
}
