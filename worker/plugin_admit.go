package worker

import (
	"context"
	"errors"
	"fmt"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/pulse-sched/pulse/store"
)

// targetCacheSize bounds the schedules whose handler and source URL a
// worker remembers. Both are immutable, so an entry never goes stale.
const targetCacheSize = 10000

// target is the handler and source URL that a schedule's slot tasks call.
type target struct {
	handler   string
	sourceURL string
}

// endpointBusyError is the error of a slot whose plugin endpoint already
// runs its limit of executions in this worker. It counts as busy: asynq
// delivers the task again a second later, without using an attempt.
type endpointBusyError struct {
	sourceURL string
	limit     int
}

func (e *endpointBusyError) Error() string {
	return fmt.Sprintf("plugin endpoint %s already runs %d executions in this worker, its limit", e.sourceURL, e.limit)
}

func (e *endpointBusyError) Is(target error) bool { return target == errBusy }

// admitPlugin takes a place of the plugin endpoint that the slots of a task
// call, so that a slow or hanging plugin holds at most its limit of the
// worker's places and never delays other plugins. It returns the function
// that gives the place back, or an error that makes asynq deliver the task
// again later when the endpoint is at its limit. Schedules whose handler is
// registered in the worker need no place.
//
// This runs before the start of the execution is recorded, so a task that
// must wait leaves no trace on the schedule.
func (w *Worker) admitPlugin(ctx context.Context, scheduleID string) (func(), error) {
	t, ok := w.targetOf(ctx, scheduleID)
	if !ok || t.sourceURL == "" {
		return func() {}, nil
	}
	if _, local := w.handler(t.handler); local {
		return func() {}, nil
	}
	release, ok := w.plugins.admit(t.sourceURL)
	if !ok {
		if allowed, suppressed := w.limiter.Allow("plugin-busy:" + t.sourceURL); allowed {
			w.logger.Warn("plugin endpoint is at its concurrency limit; its slots wait",
				"source_url", t.sourceURL, "limit", w.cfg.PluginConcurrency, "suppressed", suppressed)
		}
		w.logger.Debug("slot waits for its plugin endpoint, delivering again later",
			"schedule_id", scheduleID, "source_url", t.sourceURL)
		return nil, &endpointBusyError{sourceURL: t.sourceURL, limit: w.cfg.PluginConcurrency}
	}
	return release, nil
}

// targetOf returns the handler and source URL of a schedule, from the cache
// or from Redis. It reports false when they cannot be read; the start of the
// execution then meets the same problem and handles it.
func (w *Worker) targetOf(ctx context.Context, scheduleID string) (target, bool) {
	if t, ok := w.targets.Get(scheduleID); ok {
		return t, true
	}
	s, err := w.store.GetSchedule(ctx, scheduleID, "")
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			w.logLimited("target", "reading a schedule's handler failed", "schedule_id", scheduleID, "error", err)
		}
		return target{}, false
	}
	t := target{handler: s.HandlerName, sourceURL: s.SourceURL}
	w.targets.Add(scheduleID, t)
	return t, true
}

func newTargetCache() *lru.Cache[string, target] {
	c, err := lru.New[string, target](targetCacheSize)
	if err != nil {
		panic(err) // only for a size below 1
	}
	return c
}
