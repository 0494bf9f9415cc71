// Package worker runs the handlers of due slots. It is an asynq server whose
// one task type is a slot. Before a handler runs, the worker checks in Redis
// that the schedule is still active and unchanged and that the slot has not
// run yet. Afterwards it records the outcome on the schedule.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
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
	// plugins calls the handlers that plugins serve (plugin.go), and
	// targets caches what each schedule calls (plugin_admit.go).
	plugins *plugins
	targets *lru.Cache[string, target]

	// baseCtx ends when the drain timeout ends and Run calls cancelBase.
	// processTask then cancels the context of every handler still running.
	baseCtx    context.Context
	cancelBase context.CancelFunc
	// running counts the processTask calls in progress.
	running atomic.Int64
	// started is true from the start of the asynq server until Run begins
	// to stop, for readiness.
	started atomic.Bool
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
		plugins: newPlugins(pluginConfig{
			concurrency: cfg.PluginConcurrency, idleTimeout: cfg.PluginIdleTimeout, rootCAs: cfg.PluginRootCAs,
		}),
		targets: newTargetCache(),
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
	w.started.Store(true)
	w.logger.Info("worker started", "queue", w.cfg.Queue, "concurrency", w.cfg.Concurrency)

	<-ctx.Done()
	w.started.Store(false)
	w.logger.Info("worker stopping", "drain_timeout", w.cfg.DrainTimeout.String())
	w.server.Stop()

	if !w.waitIdle(w.cfg.DrainTimeout) {
		w.logger.Warn("drain timeout reached, interrupting running handlers", "running", w.running.Load())
	}
	w.cancelBase()
	w.waitIdle(5 * time.Second)

	w.server.Shutdown()
	w.plugins.close()
	w.logger.Info("worker stopped")
	return nil
}

// Started reports whether the worker takes tasks: true once Run has started
// the asynq server, false again when Run begins to stop.
func (w *Worker) Started() bool {
	return w.started.Load()
}

// run calls the execution's handler, turning a panic into an error.
func (w *Worker) run(ctx context.Context, e *Execution) (err error) {
	fn, ok := w.handler(e.HandlerName)
	switch {
	case !ok && e.SourceURL != "":
		fn = w.plugins.execute
	case !ok:
		return Permanent(fmt.Errorf("no handler named %q is registered in this worker, and the schedule has no source_url: its plugin had no endpoint in the registry when the schedule was created", e.HandlerName))
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

// isFailure reports to asynq which errors count as a failed attempt. A busy
// slot and an interrupted handler do not, so they keep their retry budget.
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
