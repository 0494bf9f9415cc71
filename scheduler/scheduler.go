// Package scheduler claims the due slots of active schedules and enqueues each
// one into asynq exactly once, with any number of scheduler replicas.
//
// A slot goes through three steps. The claim script atomically moves the
// schedule to its next grid slot and records the slot as in flight with a
// lease. The scheduler then enqueues the slot's task with a task ID derived
// from (schedule, slot), so a repeated enqueue is a conflict, not a second
// task. Last, it acknowledges the slot, removing the in-flight record. If a
// scheduler dies between claim and acknowledgement, another one takes the
// slot over when the lease ends and enqueues it again; the task ID makes that
// safe.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/hibiken/asynq"

	"github.com/pulse-sched/pulse/internal/logging"
	"github.com/pulse-sched/pulse/internal/metrics"
	"github.com/pulse-sched/pulse/internal/task"
	"github.com/pulse-sched/pulse/store"
)

// Enqueuer is the part of asynq.Client that the scheduler uses.
type Enqueuer interface {
	EnqueueContext(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

// Scheduler dispatches due slots. Create it with New and start it with Run.
type Scheduler struct {
	store    *store.Store
	enqueuer Enqueuer
	cfg      Config
	logger   *slog.Logger
	metrics  *metrics.Metrics
	limiter  *logging.Limiter

	// enqueueSlots bounds the enqueues in flight across all partitions.
	enqueueSlots chan struct{}
	// replica identifies this scheduler among the replicas that share the
	// partitions through leases.
	replica string
	// lastPass is the Unix nanosecond time of the latest claim pass or
	// heartbeat that reached Redis, for readiness.
	lastPass atomic.Int64
	// beforeEnqueue, when set, runs after a claim and before its enqueues.
	// Tests use it to stop a scheduler between the two steps.
	beforeEnqueue func([]store.ClaimedSlot)
}

// New returns a Scheduler that claims from st and enqueues with enqueuer.
func New(st *store.Store, enqueuer Enqueuer, cfg Config, logger *slog.Logger, m *metrics.Metrics) (*Scheduler, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("scheduler config: %w", err)
	}
	return &Scheduler{
		store:        st,
		enqueuer:     enqueuer,
		cfg:          cfg,
		logger:       logger.With("component", "scheduler"),
		metrics:      m,
		limiter:      logging.NewLimiter(30 * time.Second),
		enqueueSlots: make(chan struct{}, cfg.EnqueueConcurrency),
		replica:      newReplicaID(),
	}, nil
}

// SetBeforeEnqueue installs a hook that runs after each claim and before its
// enqueues. It exists for fault-injection tests and must be set before Run.
func (s *Scheduler) SetBeforeEnqueue(hook func([]store.ClaimedSlot)) {
	s.beforeEnqueue = hook
}

// Run dispatches slots of every partition until ctx ends. It returns nil
// after ctx ends; Redis failures are retried, never returned.
func (s *Scheduler) Run(ctx context.Context) error {
	partitions := s.store.Keys().Partitions()
	s.logger.Info("scheduler started", "partitions", partitions, "replica", s.replica,
		"poll_interval", s.cfg.PollInterval.String(), "claim_lease", s.cfg.ClaimLease.String(),
		"partition_lease", s.cfg.PartitionLease.String())
	defer s.metrics.PartitionsOwned.Set(0)

	if s.cfg.PartitionLease > 0 {
		s.runLeased(ctx)
		s.logger.Info("scheduler stopped")
		return nil
	}
	s.metrics.PartitionsOwned.Set(float64(partitions))
	var wg sync.WaitGroup
	for p := 0; p < partitions; p++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			s.runPartition(ctx, p, 0)
		}()
		go func() {
			defer wg.Done()
			s.runReclaim(ctx, p)
		}()
	}
	wg.Wait()

	s.logger.Info("scheduler stopped")
	return nil
}

// LastPass returns the time of the latest claim pass or heartbeat that
// reached Redis; zero before the first.
func (s *Scheduler) LastPass() time.Time {
	ns := s.lastPass.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// runPartition claims and enqueues the due slots of partition p until ctx
// ends. With a fencing token above zero it claims as the holder of the
// partition's lease, and returns once a claim is fenced.
func (s *Scheduler) runPartition(ctx context.Context, p int, fence int64) {
	s.logger.Debug("partition loop started", "partition", p)
	defer s.logger.Debug("partition loop stopped", "partition", p)

	retry := newRetryBackOff()
	failures := 0
	for {
		wait, err := s.dispatchOnce(ctx, p, fence)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if isFenced(err) {
				s.logger.Info("partition lease taken by another scheduler, stopping its claims", "partition", p)
				return
			}
			failures++
			wait = retry.NextBackOff()
			s.logFailure("claim", p, err, failures, wait)
		} else if failures > 0 {
			s.logger.Info("claiming works again", "partition", p, "failed_passes", failures)
			s.limiter.Reset(fmt.Sprintf("claim/%d", p))
			retry.Reset()
			failures = 0
		}

		if !sleep(ctx, wait) {
			return
		}
	}
}

// dispatchOnce claims the due slots of partition p, enqueues them and
// acknowledges them. It returns how long to wait before the next pass.
func (s *Scheduler) dispatchOnce(ctx context.Context, p int, fence int64) (time.Duration, error) {
	start := time.Now()
	claim, err := s.store.ClaimDueFenced(ctx, p, s.cfg.ClaimBatch, s.cfg.ClaimLease, fence)
	if err != nil {
		return 0, err
	}
	s.lastPass.Store(time.Now().UnixNano())

	for id, skipped := range claim.Skipped {
		s.metrics.SlotsSkipped.WithLabelValues(metrics.SkipMisfire).Add(float64(skipped))
		s.logger.Info("missed slots skipped", "partition", p, "schedule_id", id, "skipped", skipped)
	}
	if len(claim.Slots) > 0 {
		// The claimed slots are ours to enqueue now: finish them even when
		// ctx ends, so a graceful stop never leaves them to the reclaim pass.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ClaimLease/2)
		defer cancel()
		if s.beforeEnqueue != nil {
			s.beforeEnqueue(claim.Slots)
		}
		if err := s.enqueueAndAck(ctx, p, claim.Slots, claim.Now, start); err != nil {
			return 0, err
		}
	}

	// A full batch means more may be due right now.
	if len(claim.Slots) == s.cfg.ClaimBatch {
		return 0, nil
	}
	if claim.NextDue.IsZero() {
		return s.cfg.PollInterval, nil
	}
	// Both times come from the Redis clock, so the difference is right even
	// when this host's clock is off.
	wait := claim.NextDue.Sub(claim.Now) - time.Since(start)
	return min(max(wait, 0), s.cfg.PollInterval), nil
}

// enqueueAndAck enqueues the claimed ranges concurrently, then acknowledges
// those that are in asynq. A range whose enqueue failed stays in flight, and
// the reclaim pass enqueues it once its lease ends.
//
// claimedAt is the Redis time of the claim and started the local time just
// before it; together they give the Redis time of each enqueue without
// another round trip.
func (s *Scheduler) enqueueAndAck(ctx context.Context, p int, claimed []store.ClaimedSlot, claimedAt, started time.Time) error {
	var (
		mu       sync.Mutex
		acked    []store.ClaimedSlot
		slots    int
		firstErr error
		wg       sync.WaitGroup
	)
	for _, ref := range claimed {
		// A scheduler that was stopped (SIGSTOP, a long GC pause) past most of
		// its lease leaves the slot to the reclaim pass of another replica.
		if time.Since(started) > s.cfg.ClaimLease/2 {
			s.logger.Warn("claim lease nearly over, leaving slot to the reclaim pass",
				"partition", p, "schedule_id", ref.ScheduleID, "slot", ref.Slot)
			continue
		}

		select {
		case s.enqueueSlots <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-s.enqueueSlots }()

			err := s.enqueue(ctx, ref)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			acked = append(acked, ref)
			slots += ref.Count
			// A range's earlier slots are late by design: measure the latest.
			latest := ref.Slot.Add(time.Duration(ref.Count-1) * ref.Interval)
			enqueuedAt := claimedAt.Add(time.Since(started))
			s.metrics.DispatchLateness.Observe(max(enqueuedAt.Sub(latest), 0).Seconds())
		}()
	}
	wg.Wait()

	s.metrics.SlotsDispatched.Add(float64(slots))
	if err := s.store.AckSlots(ctx, p, acked); err != nil {
		return err
	}
	return firstErr
}

// enqueue puts the task of one claimed range into asynq. A task ID conflict
// means the range is already in asynq, which counts as success.
func (s *Scheduler) enqueue(ctx context.Context, c store.ClaimedSlot) error {
	slot := task.Slot{SlotRef: c.SlotRef, Count: c.Count, Interval: c.Interval, Timeout: c.Timeout, MaxRetry: c.MaxRetry}
	if slot.Timeout <= 0 {
		slot.Timeout = s.cfg.TaskTimeout
	}
	if slot.Interval <= 0 {
		// The schedule is gone, so the worker drops the task anyway.
		slot.Count = 1
	}
	ref := c.SlotRef
	t := asynq.NewTask(task.TypeSlot, task.Encode(slot),
		asynq.TaskID(ref.ExecutionID()),
		asynq.Queue(s.cfg.Queue),
		asynq.MaxRetry(slot.AsynqMaxRetry()),
		asynq.Timeout(slot.AsynqTimeout()),
		asynq.Retention(s.cfg.TaskRetention),
	)
	_, err := s.enqueuer.EnqueueContext(ctx, t)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("enqueue slot %s of schedule %s: %w", ref.Slot.Format(time.RFC3339Nano), ref.ScheduleID, err)
	}
	return nil
}

// runReclaim takes over the expired claims of partition p until ctx ends.
func (s *Scheduler) runReclaim(ctx context.Context, p int) {
	failures := 0
	wait := s.cfg.ReclaimInterval
	for sleep(ctx, wait) {
		wait = s.cfg.ReclaimInterval
		if err := s.reclaimOnce(ctx, p); err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			s.logFailure("reclaim", p, err, failures, wait)
			continue
		}
		failures = 0
	}
}

func (s *Scheduler) reclaimOnce(ctx context.Context, p int) error {
	start := time.Now()
	claimed, err := s.store.ReclaimExpired(ctx, p, s.cfg.ClaimBatch, s.cfg.ClaimLease)
	if len(claimed) == 0 {
		return err
	}

	s.logger.Warn("taking over claimed slots whose scheduler stopped before enqueuing them",
		"partition", p, "ranges", len(claimed))
	s.metrics.SlotsReclaimed.Add(float64(len(claimed)))
	now, timeErr := s.store.ServerTime(ctx)
	if timeErr != nil {
		return timeErr
	}
	if enqErr := s.enqueueAndAck(ctx, p, claimed, now, start); enqErr != nil {
		return enqErr
	}
	return err
}

func (s *Scheduler) logFailure(op string, p int, err error, failures int, wait time.Duration) {
	s.metrics.RedisErrors.WithLabelValues("scheduler").Inc()
	if ok, suppressed := s.limiter.Allow(fmt.Sprintf("%s/%d", op, p)); ok {
		s.logger.Error(op+" pass failed, retrying", "partition", p, "error", err,
			"consecutive_failures", failures, "retry_in", wait.String(), "suppressed", suppressed)
	}
}

// newRetryBackOff returns the wait between failed passes: from 100ms,
// doubling with jitter up to 2s, for as long as the failures last. The cap
// bounds how long after Redis comes back the first slot is claimed.
func newRetryBackOff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = 2 * time.Second
	return b
}

// sleep waits for d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
