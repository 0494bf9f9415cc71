// Package metrics defines every Prometheus metric that Pulse exports. Metric
// names and labels are a public contract: dashboards and alert rules rely on
// them, so a rename is a breaking change.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

const namespace = "pulse"

// Label values of SlotsSkipped's "reason".
const (
	// SkipMisfire counts slots missed while no scheduler ran; only the latest
	// missed slot of a schedule runs.
	SkipMisfire = "misfire"
	// SkipOverlap counts slots dropped because the previous execution of the
	// schedule was still running.
	SkipOverlap = "overlap"
)

// Label values of Requests's "code" besides the in-band error codes.
const (
	CodeOK          = "OK"
	CodeUnavailable = "UNAVAILABLE"
)

// Label values of RedisErrors's "component".
const (
	ComponentAPI       = "api"
	ComponentScheduler = "scheduler"
	ComponentWorker    = "worker"
	ComponentMonitor   = "monitor"
	// ComponentMetrics counts failed Redis reads of a scrape: schedule
	// counts and asynq queue statistics.
	ComponentMetrics = "metrics"
)

// Label values of RegistryReloads's "result".
const (
	ReloadSuccess = "success"
	ReloadFailure = "failure"
)

// dropReasons are the label values of TasksDropped's "reason": the verdicts
// of the start script that keep a handler from running, and
// retries_exhausted.
var dropReasons = []string{"paused", "deleted", "missing", "stale_generation", "stale_slot", "duplicate", "retries_exhausted"}

// Metrics holds Pulse's own metrics. Each process creates one and registers
// it with its registry, so tests can run several in one process.
type Metrics struct {
	// SlotsDispatched counts slots enqueued into asynq.
	SlotsDispatched prometheus.Counter
	// SlotsSkipped counts slots that never ran, by reason.
	SlotsSkipped *prometheus.CounterVec
	// SlotsReclaimed counts claimed slots that a scheduler took over after
	// the claiming scheduler stopped before it confirmed the enqueue.
	SlotsReclaimed prometheus.Counter
	// DispatchLateness observes the time from a slot to its enqueue.
	DispatchLateness prometheus.Histogram

	// Executions counts handler runs by handler and outcome.
	Executions *prometheus.CounterVec
	// ExecutionDuration observes handler run time by handler.
	ExecutionDuration *prometheus.HistogramVec
	// StartLateness observes the time from a slot to its handler's start.
	StartLateness prometheus.Histogram
	// TasksDropped counts delivered tasks that did not run, by reason.
	TasksDropped *prometheus.CounterVec

	// Requests counts ScheduleService calls by method and result code.
	Requests *prometheus.CounterVec

	// SchedulesOverdue is the number of active schedules whose next slot is
	// more than one interval in the past: a sign that no scheduler runs.
	SchedulesOverdue prometheus.Gauge
	// SchedulesAutoPaused counts schedules that Pulse paused after their
	// pause-after-failures count of consecutive failed executions.
	SchedulesAutoPaused prometheus.Counter

	// RedisErrors counts failed Redis operations by component.
	RedisErrors *prometheus.CounterVec

	// PartitionsOwned is the number of partitions whose due set this
	// scheduler polls: those whose lease it holds, or every partition with
	// leases off. Only processes that run the scheduler export it; see
	// RegisterScheduler.
	PartitionsOwned prometheus.Gauge

	// RegistryReloads counts reloads of the plugins file (SIGHUP or a change
	// of the file) by result.
	// Only processes that run the API export it; see RegisterAPI.
	RegistryReloads *prometheus.CounterVec
	// RegistryLastReloadSuccess is the Unix time of the latest successful
	// load of the plugins file, including the load at start.
	RegistryLastReloadSuccess prometheus.Gauge
}

// latencyBuckets spans 1 ms to about 65 s, for lateness and durations.
var latencyBuckets = prometheus.ExponentialBuckets(0.001, 2, 17)

// New creates the metrics and registers them with reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		SlotsDispatched: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "scheduler", Name: "slots_dispatched_total",
			Help: "Slots enqueued into asynq by the scheduler.",
		}),
		SlotsSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "slots_skipped_total",
			Help: "Slots of active schedules that never ran, by reason: misfire (missed while no scheduler ran) or overlap (previous execution still running).",
		}, []string{"reason"}),
		SlotsReclaimed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "scheduler", Name: "slots_reclaimed_total",
			Help: "Claimed slots re-enqueued after their claim's lease ended without an acknowledgement.",
		}),
		DispatchLateness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "scheduler", Name: "dispatch_lateness_seconds",
			Help:    "Time from a slot to its enqueue into asynq, in seconds.",
			Buckets: latencyBuckets,
		}),

		Executions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "worker", Name: "executions_total",
			Help: "Handler runs (attempts) by handler and outcome: succeeded, retrying, failed or interrupted.",
		}, []string{"handler", "outcome"}),
		ExecutionDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "worker", Name: "execution_duration_seconds",
			Help:    "Handler run time by handler, in seconds.",
			Buckets: latencyBuckets,
		}, []string{"handler"}),
		StartLateness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "worker", Name: "start_lateness_seconds",
			Help:    "Time from a slot to the start of its first attempt, in seconds.",
			Buckets: latencyBuckets,
		}),
		TasksDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "worker", Name: "tasks_dropped_total",
			Help: "Delivered slot tasks that did not run, by reason: paused, deleted, missing, stale_generation, stale_slot, duplicate or retries_exhausted.",
		}, []string{"reason"}),

		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "api", Name: "requests_total",
			Help: "ScheduleService calls by method and result code: OK, an in-band error code, or a gRPC status code.",
		}, []string{"method", "code"}),

		SchedulesOverdue: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "schedules_overdue",
			Help: "Active schedules whose next slot is more than one interval in the past, as of the latest check.",
		}),
		SchedulesAutoPaused: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "worker", Name: "schedules_auto_paused_total",
			Help: "Schedules paused by Pulse after reaching their pause_after_failures count.",
		}),

		RedisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "redis_errors_total",
			Help: "Failed Redis operations by component: api, scheduler, worker, monitor or metrics.",
		}, []string{"component"}),

		PartitionsOwned: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "scheduler", Name: "partitions_owned",
			Help: "Partitions whose due set this scheduler polls: those whose lease it holds, or every partition with leases off; 0 while it does not run.",
		}),

		RegistryReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "registry", Name: "reloads_total",
			Help: "Reloads of the plugins file on SIGHUP or a change of the file, by result: success or failure. A failed reload keeps the previous registry.",
		}, []string{"result"}),
		RegistryLastReloadSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "registry", Name: "last_reload_success_timestamp_seconds",
			Help: "Unix time of the latest successful load of the plugins file, at start, on SIGHUP or after a change of the file.",
		}),
	}

	// Every label value known in advance starts at zero, so that its series
	// exists from the start and rate() and increase() see its first change.
	for _, reason := range []string{SkipMisfire, SkipOverlap} {
		m.SlotsSkipped.WithLabelValues(reason)
	}
	for _, reason := range dropReasons {
		m.TasksDropped.WithLabelValues(reason)
	}
	for _, component := range []string{ComponentAPI, ComponentScheduler, ComponentWorker, ComponentMonitor, ComponentMetrics} {
		m.RedisErrors.WithLabelValues(component)
	}
	for _, result := range []string{ReloadSuccess, ReloadFailure} {
		m.RegistryReloads.WithLabelValues(result)
	}

	reg.MustRegister(
		m.SlotsDispatched, m.SlotsSkipped, m.SlotsReclaimed, m.DispatchLateness,
		m.Executions, m.ExecutionDuration, m.StartLateness, m.TasksDropped,
		m.Requests, m.SchedulesOverdue, m.SchedulesAutoPaused, m.RedisErrors,
	)
	return m
}

// RegisterScheduler registers the metrics that only a process running the
// scheduler exports, so that their absence shows that no scheduler runs.
func (m *Metrics) RegisterScheduler(reg prometheus.Registerer) {
	reg.MustRegister(m.PartitionsOwned)
}

// RegisterAPI registers the metrics that only a process running the API,
// which holds the plugin registry, exports.
func (m *Metrics) RegisterAPI(reg prometheus.Registerer) {
	reg.MustRegister(m.RegistryReloads, m.RegistryLastReloadSuccess)
}

// NewUnregistered creates metrics that no registry exports, for code paths
// and tests that do not scrape.
func NewUnregistered() *Metrics {
	return New(prometheus.NewRegistry())
}
