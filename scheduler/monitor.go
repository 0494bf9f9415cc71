package scheduler

import (
	"context"
	"log/slog"
	"time"

	"github.com/pulse-sched/pulse/internal/logging"
	"github.com/pulse-sched/pulse/internal/metrics"
	"github.com/pulse-sched/pulse/store"
)

// MonitorIntervalDefault is the time between two passes of a Monitor.
const MonitorIntervalDefault = 15 * time.Second

// Monitor makes a silent stop visible: every pass it counts the overdue
// schedules of all partitions (active, next slot more than one interval in
// the past), exports the count as pulse_schedules_overdue and logs a warning
// with sample IDs while the count is above zero. It also removes deleted
// schedules whose retention ended from the deleted index. Every role runs
// one, so overdue schedules show even when no scheduler runs at all.
type Monitor struct {
	store    *store.Store
	interval time.Duration
	logger   *slog.Logger
	metrics  *metrics.Metrics
	limiter  *logging.Limiter
}

// NewMonitor returns a Monitor that checks every interval; zero means
// MonitorIntervalDefault.
func NewMonitor(st *store.Store, interval time.Duration, logger *slog.Logger, m *metrics.Metrics) *Monitor {
	if interval <= 0 {
		interval = MonitorIntervalDefault
	}
	return &Monitor{
		store:    st,
		interval: interval,
		logger:   logger.With("component", "monitor"),
		metrics:  m,
		limiter:  logging.NewLimiter(time.Minute),
	}
}

// Run checks until ctx ends.
func (m *Monitor) Run(ctx context.Context) error {
	m.logger.Debug("monitor started", "interval", m.interval.String())
	defer m.logger.Debug("monitor stopped")
	for {
		m.runOnce(ctx)
		if !sleep(ctx, m.interval) {
			return nil
		}
	}
}

// runOnce checks every partition once. A partition that fails is logged and
// left out of the count, which then is a lower bound.
func (m *Monitor) runOnce(ctx context.Context) {
	var total int64
	var sample []string
	truncated := false
	failed := 0
	for p := range m.store.Keys().Partitions() {
		o, err := m.store.Maintain(ctx, p)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failed++
			m.metrics.RedisErrors.WithLabelValues("monitor").Inc()
			if ok, suppressed := m.limiter.Allow("maintain"); ok {
				m.logger.Error("overdue check failed", "partition", p, "error", err, "suppressed", suppressed)
			}
			continue
		}
		total += o.Count
		truncated = truncated || o.Truncated
		if len(sample) < 5 {
			sample = append(sample, o.Sample...)
		}
	}

	m.metrics.SchedulesOverdue.Set(float64(total))
	if total == 0 {
		m.limiter.Reset("overdue")
		return
	}
	if ok, suppressed := m.limiter.Allow("overdue"); ok {
		m.logger.Warn("schedules are overdue: their next slot is more than one interval in the past; check that a scheduler runs",
			"overdue", total, "at_least", truncated || failed > 0, "sample_schedule_ids", sample[:min(len(sample), 5)], "suppressed", suppressed)
	}
}
