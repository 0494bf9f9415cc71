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
			Help: "Failed Redis operations by component: api, scheduler or worker.",
		}, []string{"component"}),
	}

	reg.MustRegister(
		m.SlotsDispatched, m.SlotsSkipped, m.SlotsReclaimed, m.DispatchLateness,
		m.Executions, m.ExecutionDuration, m.StartLateness, m.TasksDropped,
		m.Requests, m.SchedulesOverdue, m.SchedulesAutoPaused, m.RedisErrors,
	)
	return m
}

// NewUnregistered creates metrics that no registry exports, for code paths
// and tests that do not scrape.
func NewUnregistered() *Metrics {
	return New(prometheus.NewRegistry())
}
