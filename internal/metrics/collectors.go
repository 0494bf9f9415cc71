package metrics

import (
	"context"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/hibiken/asynq"
	asynqmetrics "github.com/hibiken/asynq/x/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/pulse-sched/pulse/store"
)

// ScrapeCacheTTL is how long the collectors that read Redis reuse their last
// result, so that frequent or concurrent scrapes cost Redis one read per TTL.
const ScrapeCacheTTL = 5 * time.Second

// scrapeTimeout bounds the Redis reads of one collection.
const scrapeTimeout = 2 * time.Second

// Schedule states, the label values of pulse_schedules's "state".
const (
	StateActive  = "active"
	StatePaused  = "paused"
	StateDeleted = "deleted"
)

var schedulesDesc = prometheus.NewDesc(
	prometheus.BuildFQName(namespace, "", "schedules"),
	"Schedules by state: active, paused, or deleted and still readable. Counted over every partition at scrape time, so every process reports the same value.",
	[]string{"state"}, nil,
)

// SchedulesCollector exports pulse_schedules{state} from
// store.CountByState, computed when scraped and reused for ScrapeCacheTTL.
type SchedulesCollector struct {
	count   func(context.Context) (store.StateCounts, error)
	onError func(error)
	ttl     time.Duration

	mu     sync.Mutex
	at     time.Time // time of the latest read; zero before the first
	counts store.StateCounts
	err    error
}

// NewSchedulesCollector returns a collector that counts with count, usually
// (*store.Store).CountByState. onError, which may be nil, is called for each
// failed read; the scrape then has no pulse_schedules samples.
func NewSchedulesCollector(count func(context.Context) (store.StateCounts, error), onError func(error)) *SchedulesCollector {
	return &SchedulesCollector{count: count, onError: onError, ttl: ScrapeCacheTTL}
}

// Describe implements prometheus.Collector.
func (c *SchedulesCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- schedulesDesc
}

// Collect implements prometheus.Collector.
func (c *SchedulesCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() || time.Since(c.at) >= c.ttl {
		ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
		c.counts, c.err = c.count(ctx)
		cancel()
		c.at = time.Now()
		if c.err != nil && c.onError != nil {
			c.onError(c.err)
		}
	}
	if c.err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(schedulesDesc, prometheus.GaugeValue, float64(c.counts.Active), StateActive)
	ch <- prometheus.MustNewConstMetric(schedulesDesc, prometheus.GaugeValue, float64(c.counts.Paused), StatePaused)
	ch <- prometheus.MustNewConstMetric(schedulesDesc, prometheus.GaugeValue, float64(c.counts.Deleted), StateDeleted)
}

// QueueCollector exports asynq's queue metrics (asynq_queue_size,
// asynq_queue_latency_seconds, asynq_tasks_enqueued_total{state} and more)
// with the collector of github.com/hibiken/asynq/x/metrics, reusing each
// result for ScrapeCacheTTL.
//
// asynq's collector logs a failed read with the standard log package and
// cannot report it, so QueueCollector first checks that Redis replies to
// PING: while it does not, the scrape has no asynq samples and onError is
// called.
type QueueCollector struct {
	inner   prometheus.Collector
	check   func(context.Context) error
	onError func(error)
	ttl     time.Duration

	mu     sync.Mutex
	at     time.Time
	cached []prometheus.Metric
}

// NewQueueCollector returns a collector of the queues that inspector reads.
// check, usually (*store.Store).Ping, runs before each read; onError may be
// nil.
func NewQueueCollector(inspector *asynq.Inspector, check func(context.Context) error, onError func(error)) *QueueCollector {
	return &QueueCollector{
		inner:   asynqmetrics.NewQueueMetricsCollector(inspector),
		check:   check,
		onError: onError,
		ttl:     ScrapeCacheTTL,
	}
}

// Describe implements prometheus.Collector. It describes nothing, which
// makes the collector unchecked: the queues, and so the series, are only
// known when Redis is read.
func (c *QueueCollector) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (c *QueueCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() || time.Since(c.at) >= c.ttl {
		c.cached = c.read()
		c.at = time.Now()
	}
	for _, m := range c.cached {
		ch <- m
	}
}

func (c *QueueCollector) read() []prometheus.Metric {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	err := c.check(ctx)
	cancel()
	if err != nil {
		if c.onError != nil {
			c.onError(err)
		}
		return nil
	}
	ch := make(chan prometheus.Metric)
	var out []prometheus.Metric
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range ch {
			out = append(out, m)
		}
	}()
	c.inner.Collect(ch)
	close(ch)
	<-done
	return out
}

// grpcLatencyBuckets spans 1 ms to 10 s, for gRPC call durations.
var grpcLatencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// NewGRPCServerMetrics returns the gRPC server metrics of
// go-grpc-middleware's Prometheus provider (grpc_server_started_total,
// grpc_server_handled_total, grpc_server_msg_received_total,
// grpc_server_msg_sent_total and the grpc_server_handling_seconds
// histogram). Register it, pass GRPCServerOptions to the server, and call
// its InitializeMetrics with the server.
func NewGRPCServerMetrics() *grpcprom.ServerMetrics {
	return grpcprom.NewServerMetrics(
		grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramBuckets(grpcLatencyBuckets)),
	)
}

// GRPCServerOptions returns the server options that record m: its unary and
// stream interceptors.
func GRPCServerOptions(m *grpcprom.ServerMetrics) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(m.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(m.StreamServerInterceptor()),
	}
}
