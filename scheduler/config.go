package scheduler

import (
	"fmt"
	"time"
)

// Config sets up a Scheduler. The zero value of each field means its default.
type Config struct {
	// PollInterval is the longest a partition waits between two claims when
	// nothing is due sooner, and so the longest delay before a schedule
	// created with run_immediately fires. Default 200ms.
	PollInterval time.Duration
	// ClaimBatch is the most schedules one claim script call claims in a
	// partition; a full batch is followed at once by another. Default 256.
	ClaimBatch int
	// ClaimLease is how long a claimed slot may wait for its enqueue before
	// another scheduler takes it over, so it bounds the delay of a slot whose
	// scheduler died after claiming it. Default 10s.
	ClaimLease time.Duration
	// ReclaimInterval is the time between two passes that take over expired
	// claims. Default 1s.
	ReclaimInterval time.Duration
	// PartitionLease is how long a replica holds a partition's lease
	// without renewing it. Replicas renew, and rebalance, every third of
	// it, so a partition whose owner died is taken over within 4/3 of it,
	// and one whose owner stopped gracefully or that moves to a joining
	// replica within 2/3 of it. Default 3s; a negative value turns leases
	// off, and every replica then claims from every partition.
	PartitionLease time.Duration
	// EnqueueConcurrency is the number of enqueues in flight at once per
	// scheduler. Default 64.
	EnqueueConcurrency int
	// Queue is the asynq queue that slot tasks go to. Default "pulse".
	Queue string
	// TaskTimeout bounds one attempt of a handler of a schedule that sets no
	// timeout of its own. Default 30s.
	TaskTimeout time.Duration
	// TaskRetention is how long asynq keeps a completed task, and so how long
	// its slot's task ID stays taken. It must outlast ClaimLease plus
	// ReclaimInterval, the longest time after which a slot can be enqueued
	// again. Default 5m.
	TaskRetention time.Duration
}

// Defaults of Config.
const (
	PollIntervalDefault       = 200 * time.Millisecond
	ClaimBatchDefault         = 256
	ClaimLeaseDefault         = 10 * time.Second
	ReclaimIntervalDefault    = time.Second
	EnqueueConcurrencyDefault = 64
	PartitionLeaseDefault     = 3 * time.Second
	QueueDefault              = "pulse"
	TaskTimeoutDefault        = 30 * time.Second
	TaskRetentionDefault      = 5 * time.Minute
)

func (c Config) withDefaults() Config {
	if c.PollInterval == 0 {
		c.PollInterval = PollIntervalDefault
	}
	if c.ClaimBatch == 0 {
		c.ClaimBatch = ClaimBatchDefault
	}
	if c.ClaimLease == 0 {
		c.ClaimLease = ClaimLeaseDefault
	}
	if c.ReclaimInterval == 0 {
		c.ReclaimInterval = ReclaimIntervalDefault
	}
	if c.PartitionLease == 0 {
		c.PartitionLease = PartitionLeaseDefault
	}
	if c.EnqueueConcurrency == 0 {
		c.EnqueueConcurrency = EnqueueConcurrencyDefault
	}
	if c.Queue == "" {
		c.Queue = QueueDefault
	}
	if c.TaskTimeout == 0 {
		c.TaskTimeout = TaskTimeoutDefault
	}
	if c.TaskRetention == 0 {
		c.TaskRetention = TaskRetentionDefault
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.PollInterval < time.Millisecond:
		return fmt.Errorf("poll interval %s is too short: it must be at least 1ms", c.PollInterval)
	case c.ClaimBatch < 1 || c.ClaimBatch > 10000:
		return fmt.Errorf("claim batch %d is out of range: it must be between 1 and 10000", c.ClaimBatch)
	case c.ClaimLease < time.Second:
		return fmt.Errorf("claim lease %s is too short: it must be at least 1s", c.ClaimLease)
	case c.ReclaimInterval < 10*time.Millisecond:
		return fmt.Errorf("reclaim interval %s is too short: it must be at least 10ms", c.ReclaimInterval)
	case c.PartitionLease > 0 && c.PartitionLease < 300*time.Millisecond:
		return fmt.Errorf("partition lease %s is too short: it must be at least 300ms, or negative to turn leases off", c.PartitionLease)
	case c.EnqueueConcurrency < 1:
		return fmt.Errorf("enqueue concurrency %d is invalid: it must be at least 1", c.EnqueueConcurrency)
	case c.TaskTimeout < time.Second:
		return fmt.Errorf("task timeout %s is too short: it must be at least 1s", c.TaskTimeout)
	case c.TaskRetention < 2*(c.ClaimLease+c.ReclaimInterval):
		return fmt.Errorf("task retention %s is too short: it must be at least twice the claim lease plus the reclaim interval (%s), or a reclaimed slot could run twice",
			c.TaskRetention, 2*(c.ClaimLease+c.ReclaimInterval))
	}
	return nil
}
