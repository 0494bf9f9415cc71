package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/pulse-sched/pulse/api"
	"github.com/pulse-sched/pulse/internal/admin"
	"github.com/pulse-sched/pulse/internal/logging"
	"github.com/pulse-sched/pulse/internal/metrics"
	"github.com/pulse-sched/pulse/store"
)

// newMetrics returns the registry that /metrics exports and Pulse's metrics,
// registered in it with the collectors that every role exports: Go runtime,
// process, schedules by state and asynq's queues. The last two read Redis
// when scraped and count a failed read in
// pulse_redis_errors_total{component="metrics"}.
func newMetrics(rdb redis.UniversalClient, st *store.Store, logger *slog.Logger) (*prometheus.Registry, *metrics.Metrics) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)

	scrapeLogger := logger.With("component", "metrics")
	limiter := logging.NewLimiter(30 * time.Second)
	onError := func(what string) func(error) {
		return func(err error) {
			m.RedisErrors.WithLabelValues(metrics.ComponentMetrics).Inc()
			if ok, suppressed := limiter.Allow(what); ok {
				scrapeLogger.Warn("a scrape could not read Redis; its samples are left out", "read", what, "error", err, "suppressed", suppressed)
			}
		}
	}
	reg.MustRegister(
		metrics.NewSchedulesCollector(st.CountByState, onError("schedules by state")),
		metrics.NewQueueCollector(asynq.NewInspectorFromRedisClient(rdb), st.Ping, onError("asynq queues")),
	)
	return reg, m
}

// apiReadiness returns the readiness check of the API role: the gRPC health
// service reports ScheduleService as serving, which it does once the API
// reached Redis.
func apiReadiness(hs *health.Server) admin.Check {
	return func(ctx context.Context) error {
		resp, err := hs.Check(ctx, &healthpb.HealthCheckRequest{Service: api.ServiceName})
		if err != nil {
			return err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return errors.New("the gRPC health of " + api.ServiceName + " is " + resp.GetStatus().String())
		}
		return nil
	}
}

// mountMonitoring serves the asynq web console under /monitoring/ for admin
// tokens of registry, which a SIGHUP may reload at any time. In development
// mode (embedded Redis, no plugins file) the registry has no admin, so the
// token of the plugin "dev", printed at start, is accepted too.
func mountMonitoring(h *admin.Handler, rdb redis.UniversalClient, registry *api.Registry, devMode, writable bool, logger *slog.Logger) {
	authorize := func(token string) admin.Access {
		p, ok := registry.Authenticate(token)
		switch {
		case !ok:
			return admin.AccessNone
		case p.IsAdmin(), devMode && p.Plugin != nil && p.Plugin.ATSCode == devPlugin:
			return admin.AccessGranted
		default:
			return admin.AccessDenied
		}
	}
	h.Handle(admin.MonitoringPath+"/", admin.NewMonitoring(admin.MonitoringOptions{
		Redis:     rdb,
		Authorize: authorize,
		Writable:  writable,
		Logger:    logger.With("component", "monitoring"),
	}))
	logger.Info("monitoring console enabled", "path", admin.MonitoringPath+"/", "writable", writable)
}
