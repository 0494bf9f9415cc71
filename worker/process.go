package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/pulse-sched/pulse/internal/metrics"
	"github.com/pulse-sched/pulse/internal/task"
	"github.com/pulse-sched/pulse/store"
)

// slotResult is the outcome of one slot of a task.
type slotResult int

const (
	// slotDone means the slot ran to an end (succeeded or failed for good)
	// or was dropped for a reason that leaves later slots runnable.
	slotDone slotResult = iota
	// slotDropAll means the schedule is gone, paused or changed, so the
	// task's later slots are dropped too.
	slotDropAll
	// slotAgain means the task must be delivered again: the attempt will be
	// retried, was interrupted, or must wait.
	slotAgain
)

// processTask runs one delivery of a slot task: each of its slots in order,
// one execution each.
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
	attempt, _ := asynq.GetRetryCount(ctx)
	if attempt > slot.MaxRetry {
		return w.endExhausted(ctx, slot, attempt)
	}
	release, err := w.admitPlugin(ctx, slot.ScheduleID)
	if err != nil {
		return err
	}
	defer release()

	refs := slot.Slots()
	var held *store.Execution // the execution that holds a kept running marker
	defer func() {
		if held != nil {
			w.releaseMarker(ctx, *held)
		}
	}()

	for i, ref := range refs {
		predecessor := ""
		if held != nil {
			predecessor = held.ID
		}
		keep := i < len(refs)-1
		exec, result, err := w.runSlot(ctx, slot, ref, attempt, predecessor, keep)
		if exec != nil {
			// This slot took the marker over, or released it at the end.
			held = nil
			if keep && result == slotDone {
				held = exec
			}
		}
		switch result {
		case slotDropAll:
			return nil
		case slotAgain:
			return err
		}
	}
	return nil
}

// runSlot runs the execution of one slot. It returns the execution when the
// handler ran, what the task should do next, and for slotAgain the error to
// return to asynq.
func (w *Worker) runSlot(ctx context.Context, slot task.Slot, ref store.SlotRef, attempt int, predecessor string, keepMarker bool) (*store.Execution, slotResult, error) {
	stored, verdict, err := w.store.StartExecution(ctx, store.StartRequest{
		Slot:         ref,
		Attempt:      attempt,
		RunningLease: slot.Timeout + w.cfg.RunningLeaseGrace,
		Predecessor:  predecessor,
	})
	if err != nil {
		w.metrics.RedisErrors.WithLabelValues("worker").Inc()
		w.logLimited("start", "recording an execution start failed, asynq retries the task", "schedule_id", ref.ScheduleID, "error", err)
		return nil, slotAgain, err
	}
	if verdict != store.VerdictRun {
		return nil, w.drop(ref, attempt, verdict), errBusy
	}

	exec := newExecution(stored)
	if attempt == 0 {
		w.metrics.StartLateness.Observe(max(stored.StartedAt.Sub(ref.Slot), 0).Seconds())
	}
	w.logger.Debug("execution started", "schedule_id", exec.ScheduleID, "execution_id", exec.ID,
		"slot", exec.Slot, "attempt", attempt, "handler", exec.HandlerName, "started_at", stored.StartedAt)

	started := time.Now()
	runCtx, cancel := context.WithTimeout(ctx, slot.Timeout)
	runErr := w.run(runCtx, exec)
	// A plugin call names its own timeout, so name it for in-process handlers too.
	if runErr != nil && errors.Is(runCtx.Err(), context.DeadlineExceeded) && ctx.Err() == nil &&
		!strings.HasPrefix(runErr.Error(), PluginCallErrorPrefix) {
		runErr = fmt.Errorf("timed out: handler %q did not return within the attempt's timeout of %s: %w", exec.HandlerName, slot.Timeout, runErr)
	}
	cancel()
	status := w.statusOf(ctx, runErr, attempt, slot.MaxRetry)
	w.logger.Debug("execution finished", "schedule_id", exec.ScheduleID, "execution_id", exec.ID,
		"slot", exec.Slot, "attempt", attempt, "handler", exec.HandlerName, "status", string(status),
		"finished_at", stored.StartedAt.Add(time.Since(started)), "error", runErr)

	w.finish(ctx, stored, status, runErr, keepMarker && status.Final())
	w.metrics.Executions.WithLabelValues(w.handlerLabel(exec.HandlerName), string(status)).Inc()

	switch status {
	case store.StatusSucceeded:
		return &stored, slotDone, nil
	case store.StatusFailed:
		w.logger.Warn("execution failed, no attempt left", "schedule_id", exec.ScheduleID,
			"execution_id", exec.ID, "handler", exec.HandlerName, "attempt", attempt, "error", runErr)
		return &stored, slotDone, nil
	case store.StatusInterrupted:
		return &stored, slotAgain, errInterrupted
	default:
		w.logger.Info("execution failed, will retry", "schedule_id", exec.ScheduleID,
			"execution_id", exec.ID, "handler", exec.HandlerName, "attempt", attempt, "error", runErr)
		return &stored, slotAgain, runErr
	}
}

// finish records the outcome of an attempt, even when ctx has ended, so that
// a redelivery can tell what happened to it.
func (w *Worker) finish(ctx context.Context, e store.Execution, status store.ExecutionStatus, runErr error, keepMarker bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()

	req := store.FinishRequest{Execution: e, Status: status, KeepMarker: keepMarker}
	if runErr != nil {
		req.Error = runErr.Error()
	}
	res, err := w.store.FinishExecution(ctx, req)
	if err != nil {
		w.metrics.RedisErrors.WithLabelValues("worker").Inc()
		w.logLimited("finish", "recording an execution outcome failed", "schedule_id", e.ScheduleID, "execution_id", e.ID, "error", err)
		return
	}
	if res.Paused {
		w.metrics.SchedulesAutoPaused.Inc()
		w.logger.Warn("schedule paused after consecutive failed executions; resume it once the handler is fixed",
			"schedule_id", e.ScheduleID, "execution_id", e.ID)
	}
}

// releaseMarker releases a running marker kept for a range slot that did not
// come.
func (w *Worker) releaseMarker(ctx context.Context, e store.Execution) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := w.store.ReleaseMarker(ctx, e); err != nil {
		w.metrics.RedisErrors.WithLabelValues("worker").Inc()
		w.logLimited("finish", "releasing a running marker failed; it ends with its lease", "schedule_id", e.ScheduleID, "execution_id", e.ID, "error", err)
	}
}

// endExhausted ends the spare delivery that asynq makes after the last
// attempt timed out or its worker died (see task.Slot.AsynqMaxRetry): the
// slot has used its retries, so its latest attempt is recorded as failed and
// the task archived.
func (w *Worker) endExhausted(ctx context.Context, slot task.Slot, attempt int) error {
	for _, ref := range slot.Slots() {
		last := store.Execution{ID: ref.ExecutionID(), ScheduleID: ref.ScheduleID, Attempt: attempt - 1}
		res, err := w.store.FinishExecution(ctx, store.FinishRequest{
			Execution: last, Status: store.StatusFailed,
			Error: "the last attempt timed out or its worker stopped",
		})
		if err != nil {
			w.metrics.RedisErrors.WithLabelValues("worker").Inc()
			w.logLimited("finish", "recording an execution outcome failed", "schedule_id", ref.ScheduleID, "execution_id", last.ID, "error", err)
			return err
		}
		if res.Recorded {
			w.logger.Warn("execution failed, no attempt left: the last attempt timed out or its worker stopped",
				"schedule_id", ref.ScheduleID, "execution_id", last.ID, "attempts", attempt)
		}
	}
	w.metrics.TasksDropped.WithLabelValues("retries_exhausted").Inc()
	return fmt.Errorf("slot task of schedule %s used its %d attempts: %w", slot.ScheduleID, attempt, asynq.SkipRetry)
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

// drop handles a verdict that keeps the handler from running and returns
// what the task does next.
func (w *Worker) drop(ref store.SlotRef, attempt int, verdict store.Verdict) slotResult {
	attrs := []any{"schedule_id", ref.ScheduleID, "slot", ref.Slot, "attempt", attempt, "reason", string(verdict)}
	switch verdict {
	case store.VerdictBusy:
		w.logger.Debug("slot must wait for a running execution, delivering again later", attrs...)
		return slotAgain
	case store.VerdictOverlap:
		w.metrics.SlotsSkipped.WithLabelValues(metrics.SkipOverlap).Inc()
		w.logger.Info("slot skipped: the previous execution is still running", attrs...)
		return slotDone
	case store.VerdictStaleSlot, store.VerdictDuplicate:
		w.metrics.TasksDropped.WithLabelValues(string(verdict)).Inc()
		w.logger.Debug("slot task dropped", attrs...)
		return slotDone
	default:
		w.metrics.TasksDropped.WithLabelValues(string(verdict)).Inc()
		w.logger.Debug("slot task dropped", attrs...)
		return slotDropAll
	}
}
