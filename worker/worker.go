// Package worker runs the handlers of due slots. It is an asynq server whose
// one task type is a slot; before a handler runs, the worker checks in Redis
// that the schedule is still active and unchanged and that the slot has not
// run yet, and afterwards it records the outcome on the schedule.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/pulse-sched/pulse/internal/logging"
	"github.com/pulse-sched/pulse/internal/metrics"
	"github.com/pulse-sched/pulse/internal/task"
	"github.com/pulse-sched/pulse/store"
)

// errBusy makes asynq deliver a task again later without counting a failed
// attempt.
var errBusy = errors.New("slot is still running in another worker")

// errInterrupted is the error of an attempt cut short by a stopping worker.
var errInterrupted = errors.New("worker stopped before the handler returned")

// Worker runs slot tasks. Create it with New, register handlers with Handle
// and start it with Run.
type Worker struct {
	store   *store.Store
	cfg     Config
	logger  *slog.Logger
	metrics *metrics.Metrics
	limiter *logging.Limiter
	server  *asynq.Server

	mu       sync.RWMutex
	handlers map[string]HandlerFunc

	// baseCtx ends when the drain timeout ends and Run calls cancelBase.
	// processTask then cancels the context of every handler still running.
	baseCtx    context.Context
	cancelBase context.CancelFunc
	// running counts the processTask calls in progress.
	running atomic.Int64
}

// New returns a Worker that takes slot tasks from rdb and reads schedules
// from st. The built-in pulse.log handler is registered.
func New(rdb redis.UniversalClient, st *store.Store, cfg Config, logger *slog.Logger, m *metrics.Metrics) (*Worker, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("worker config: %w", err)
	}

	w := &Worker{
		store:    st,
		cfg:      cfg,
		logger:   logger.With("component", "worker"),
		metrics:  m,
		limiter:  logging.NewLimiter(30 * time.Second),
		handlers: map[string]HandlerFunc{},
	}
	w.baseCtx, w.cancelBase = context.WithCancel(context.Background())
	w.server = asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              cfg.Concurrency,
		Queues:                   map[string]int{cfg.Queue: 1},
		TaskCheckInterval:        cfg.PollInterval,
		DelayedTaskCheckInterval: time.Second,
		RetryDelayFunc:           retryDelay,
		IsFailure:                isFailure,
		// The worker drains handlers itself first (see Run), so asynq's
		// own timeout only covers handlers that ignore cancellation.
		ShutdownTimeout: cfg.DrainTimeout + 5*time.Second,
		Logger:          logging.AsynqLogger{Logger: w.logger.With("source", "asynq")},
		LogLevel:        asynq.WarnLevel,
		HealthCheckFunc: w.healthCheck,
	})
	w.Handle(LogHandlerName, logHandler(w.logger))
	w.Handle(SleepHandlerName, sleepHandler(w.logger))
	return w, nil
}

// Handle registers fn as the handler named name, replacing any handler of
// that name. It may be called at any time.
func (w *Worker) Handle(name string, fn HandlerFunc) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.handlers[name] = fn
}

func (w *Worker) handler(name string) (HandlerFunc, bool) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	fn, ok := w.handlers[name]
	return fn, ok
}

// Run processes slot tasks until ctx ends, then stops gracefully: it takes
// no new task, lets running handlers finish for up to the drain timeout,
// then cancels the rest, whose tasks asynq delivers again.
func (w *Worker) Run(ctx context.Context) error {
	mux := asynq.NewServeMux()
	mux.HandleFunc(task.TypeSlot, w.processTask)
	if err := w.server.Start(mux); err != nil {
		return fmt.Errorf("start asynq server: %w", err)
	}
	w.logger.Info("worker started", "queue", w.cfg.Queue, "concurrency", w.cfg.Concurrency)

	<-ctx.Done()
	w.logger.Info("worker stopping", "drain_timeout", w.cfg.DrainTimeout.String())
	w.server.Stop()

	if !w.waitIdle(w.cfg.DrainTimeout) {
		w.logger.Warn("drain timeout reached, interrupting running handlers", "running", w.running.Load())
	}
	w.cancelBase()
	w.waitIdle(5 * time.Second)

	w.server.Shutdown()
	w.logger.Info("worker stopped")
	return nil
}

// processTask runs one delivery of a slot task.
func (w *Worker) processTask(ctx context.Context, t *asynq.Task) error {
	w.running.Add(1)
	defer w.running.Add(-1)

	// An interrupting drain cancels only this child of asynq's context. Had it
	// canceled asynq's context itself, asynq would fail the task with
	// context.Canceled at once, counting a failed attempt, instead of
	// waiting for errInterrupted, which keeps the attempt number.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopInterrupt := context.AfterFunc(w.baseCtx, cancel)
	defer stopInterrupt()

	slot, err := task.Decode(t.Payload())
	if err != nil {
		w.logger.Error("dropping malformed slot task", "error", err)
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	ref := slot.SlotRef
	attempt, _ := asynq.GetRetryCount(ctx)
	maxRetry := slot.MaxRetry

	if attempt > maxRetry {
		return w.endExhausted(ctx, slot, attempt)
	}

	lease := w.cfg.RunningLeaseGrace
	if deadline, ok := ctx.Deadline(); ok {
		lease += time.Until(deadline)
	}
	stored, verdict, err := w.store.StartExecution(ctx, ref, attempt, lease)
	if err != nil {
		w.metrics.RedisErrors.WithLabelValues("worker").Inc()
		w.logLimited("start", "recording an execution start failed, asynq retries the task", "schedule_id", ref.ScheduleID, "error", err)
		return err
	}
	if verdict != store.VerdictRun {
		return w.drop(ref, attempt, verdict)
	}

	exec := newExecution(stored)
	if attempt == 0 {
		w.metrics.StartLateness.Observe(max(stored.StartedAt.Sub(ref.Slot), 0).Seconds())
	}
	w.logger.Debug("execution started", "schedule_id", exec.ScheduleID, "execution_id", exec.ID,
		"slot", exec.Slot, "attempt", attempt, "handler", exec.HandlerName, "started_at", stored.StartedAt)
	started := time.Now()
	runErr := w.run(ctx, exec)
	status := w.statusOf(ctx, runErr, attempt, maxRetry)
	w.logger.Debug("execution finished", "schedule_id", exec.ScheduleID, "execution_id", exec.ID,
		"slot", exec.Slot, "attempt", attempt, "handler", exec.HandlerName, "status", string(status),
		"finished_at", stored.StartedAt.Add(time.Since(started)), "error", runErr)

	// Record the outcome even when ctx has ended, so that a redelivery knows
	// what happened to this attempt.
	finishCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := w.store.FinishExecution(finishCtx, stored, status); err != nil {
		w.metrics.RedisErrors.WithLabelValues("worker").Inc()
		w.logLimited("finish", "recording an execution outcome failed", "schedule_id", exec.ScheduleID, "execution_id", exec.ID, "error", err)
	}

	w.metrics.Executions.WithLabelValues(w.handlerLabel(exec.HandlerName), string(status)).Inc()
	switch status {
	case store.StatusSucceeded:
		return nil
	case store.StatusInterrupted:
		return errInterrupted
	case store.StatusFailed:
		w.logger.Warn("execution failed, no attempt left", "schedule_id", exec.ScheduleID,
			"execution_id", exec.ID, "handler", exec.HandlerName, "attempt", attempt, "error", runErr)
		return fmt.Errorf("%w: %w", runErr, asynq.SkipRetry)
	default:
		w.logger.Info("execution failed, will retry", "schedule_id", exec.ScheduleID,
			"execution_id", exec.ID, "handler", exec.HandlerName, "attempt", attempt, "error", runErr)
		return runErr
	}
}

// endExhausted ends the spare delivery that asynq makes after the last
// attempt timed out or its worker died (see task.Slot.AsynqMaxRetry): the
// slot has used its retries, so it is recorded as failed and archived.
func (w *Worker) endExhausted(ctx context.Context, slot task.Slot, attempt int) error {
	last := store.Execution{ID: slot.ExecutionID(), ScheduleID: slot.ScheduleID, Attempt: attempt - 1}
	if _, err := w.store.FinishExecution(ctx, last, store.StatusFailed); err != nil {
		w.metrics.RedisErrors.WithLabelValues("worker").Inc()
		w.logLimited("finish", "recording an execution outcome failed", "schedule_id", slot.ScheduleID, "execution_id", last.ID, "error", err)
		return err
	}
	w.metrics.TasksDropped.WithLabelValues("retries_exhausted").Inc()
	w.logger.Warn("execution failed, no attempt left: the last attempt timed out or its worker stopped",
		"schedule_id", slot.ScheduleID, "execution_id", last.ID, "attempts", attempt)
	return fmt.Errorf("execution %s used its %d attempts: %w", last.ID, attempt, asynq.SkipRetry)
}

// run calls the execution's handler, turning a panic into an error.
func (w *Worker) run(ctx context.Context, e *Execution) (err error) {
	fn, ok := w.handler(e.HandlerName)
	if !ok {
		return Permanent(fmt.Errorf("no handler named %q is registered in this worker", e.HandlerName))
	}

	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler %q panicked: %v", e.HandlerName, r)
		}
		w.metrics.ExecutionDuration.WithLabelValues(w.handlerLabel(e.HandlerName)).Observe(time.Since(start).Seconds())
	}()
	return fn(ctx, e)
}

// statusOf classifies the result of one attempt.
func (w *Worker) statusOf(ctx context.Context, runErr error, attempt, maxRetry int) store.ExecutionStatus {
	switch {
	case runErr == nil:
		return store.StatusSucceeded
	case w.baseCtx.Err() != nil && errors.Is(ctx.Err(), context.Canceled):
		return store.StatusInterrupted
	case errors.Is(runErr, ErrPermanent) || attempt >= maxRetry:
		return store.StatusFailed
	default:
		return store.StatusRetrying
	}
}

// drop ends a delivery whose handler must not run.
func (w *Worker) drop(ref store.SlotRef, attempt int, verdict store.Verdict) error {
	attrs := []any{"schedule_id", ref.ScheduleID, "slot", ref.Slot, "attempt", attempt, "reason", string(verdict)}
	switch verdict {
	case store.VerdictBusy:
		w.logger.Debug("slot is running elsewhere, delivering again later", attrs...)
		return errBusy
	case store.VerdictOverlap:
		w.metrics.SlotsSkipped.WithLabelValues(metrics.SkipOverlap).Inc()
		w.logger.Info("slot skipped: the previous execution is still running", attrs...)
	default:
		w.metrics.TasksDropped.WithLabelValues(string(verdict)).Inc()
		w.logger.Debug("slot task dropped", attrs...)
	}
	return nil
}

// handlerLabel bounds the "handler" label: names not registered in this
// worker share one value, so unknown names cannot grow the series count.
func (w *Worker) handlerLabel(name string) string {
	if _, ok := w.handler(name); ok {
		return name
	}
	return "other"
}

func (w *Worker) healthCheck(err error) {
	if err != nil {
		w.metrics.RedisErrors.WithLabelValues("worker").Inc()
		w.logLimited("health", "asynq cannot reach Redis", "error", err)
	}
}

func (w *Worker) logLimited(key, msg string, attrs ...any) {
	if ok, suppressed := w.limiter.Allow(key); ok {
		w.logger.Error(msg, append(attrs, "suppressed", suppressed)...)
	}
}

// isFailure tells asynq which errors count as a failed attempt: a busy slot
// and an interrupted handler do not, so they keep their retry budget.
func isFailure(err error) bool {
	return !errors.Is(err, errBusy) && !errors.Is(err, errInterrupted)
}

// retryDelay is the wait before asynq delivers a task again: one second for
// a busy or interrupted slot, else exponential from 1s up to 1 minute.
func retryDelay(n int, err error, _ *asynq.Task) time.Duration {
	if !isFailure(err) {
		return time.Second
	}
	d := time.Second << min(n, 6)
	return min(d, time.Minute)
}

// waitIdle waits up to d for every processTask call to return and reports
// whether they all did.
func (w *Worker) waitIdle(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for w.running.Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}
