package main

import (
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"github.com/pulse-sched/pulse/api"
	"github.com/pulse-sched/pulse/scheduler"
	"github.com/pulse-sched/pulse/store"
	"github.com/pulse-sched/pulse/worker"
)

// redisFlags are the settings of every role.
type redisFlags struct {
	RedisURL      string        `name:"redis-url" env:"PULSE_REDIS_URL" placeholder:"URL" help:"Redis to keep schedules in: redis://host:port/db, rediss://, redis-sentinel://host:port,...?master=NAME or redis-cluster://host:port,.... Only serve may leave it empty, to use an embedded in-memory Redis."`
	KeyPrefix     string        `name:"key-prefix" env:"PULSE_KEY_PREFIX" default:"pulse" help:"Prefix of every Redis key, to share one Redis between deployments."`
	Partitions    int           `name:"partitions" env:"PULSE_PARTITIONS" default:"16" help:"Number of partitions that schedules are spread over. Fixed at the first start on an empty Redis; every process must use the same value."`
	AllowEviction bool          `name:"allow-eviction" env:"PULSE_ALLOW_EVICTION" help:"Start even when Redis's maxmemory-policy may evict keys, which can silently lose schedules."`
	HTTPAddr      string        `name:"http-addr" env:"PULSE_HTTP_ADDR" default:"127.0.0.1:7401" help:"Address of the HTTP admin server (/healthz, /readyz, /metrics, and /monitoring/ with the API). Empty disables it."`
	OverdueCheck  time.Duration `name:"overdue-check-interval" env:"PULSE_OVERDUE_CHECK_INTERVAL" default:"15s" help:"Time between two checks for overdue schedules (active, next slot more than one interval in the past), which every role runs."`
	// ClockOffset shifts this process's own clock, to test that replicas with
	// skewed clocks behave. Due decisions use the Redis clock, so it only
	// moves the times Pulse reads locally (new IDs, start_at checks).
	ClockOffset time.Duration `name:"clock-offset" env:"PULSE_CLOCK_OFFSET" hidden:"" help:"Test only: shift this process's local clock."`
}

// apiFlags are the settings of the API role.
type apiFlags struct {
	GRPCAddr         string        `name:"grpc-addr" env:"PULSE_GRPC_ADDR" default:"127.0.0.1:7400" help:"Address the ScheduleService gRPC API listens on."`
	PluginsFile      string        `name:"plugins-file" env:"PULSE_PLUGINS_FILE" placeholder:"PATH" help:"YAML registry of plugins and admins and the SHA-256 of their tokens. Reloaded on SIGHUP."`
	DeletedRetention time.Duration `name:"deleted-retention" env:"PULSE_DELETED_RETENTION" default:"168h" help:"How long a deleted schedule stays readable before it is removed."`
	MaxPayloadBytes  int           `name:"max-payload-bytes" env:"PULSE_MAX_PAYLOAD_BYTES" default:"1048576" help:"Largest payload a schedule may carry, in bytes."`
	WaitReplicas     int           `name:"wait-replicas" env:"PULSE_WAIT_REPLICAS" default:"0" help:"Replicas that must have each create, pause, resume and delete (Redis WAIT) before the call succeeds; 0 does not wait. See docs/configuration.md for what it protects."`
	WaitTimeout      time.Duration `name:"wait-timeout" env:"PULSE_WAIT_TIMEOUT" default:"1s" help:"Maximum wait for --wait-replicas; a change that too few replicas confirmed in time fails with UNAVAILABLE."`
	MinInterval      time.Duration `name:"min-interval" env:"PULSE_MIN_INTERVAL" default:"1s" help:"Shortest interval a schedule may have; whole seconds."`
	DefaultTimeout   time.Duration `name:"default-timeout" env:"PULSE_DEFAULT_TIMEOUT" default:"30s" help:"Deadline of one handler attempt for schedules whose request sets no timeout_seconds."`
	DefaultRetries   int           `name:"default-max-retries" env:"PULSE_DEFAULT_MAX_RETRIES" default:"3" help:"Retries after a failed attempt for schedules whose request sets no max_retries; 0 disables retries."`

	Monitoring         bool `name:"monitoring" env:"PULSE_MONITORING" default:"true" negatable:"" help:"Serve the asynq web console under /monitoring/ on the HTTP admin server, for admin tokens."`
	MonitoringWritable bool `name:"monitoring-writable" env:"PULSE_MONITORING_WRITABLE" help:"Let the console under /monitoring/ change tasks and queues (delete, run, archive, pause). Default: read-only."`
}

// schedulerFlags are the settings of the scheduler role.
type schedulerFlags struct {
	PollInterval   time.Duration `name:"poll-interval" env:"PULSE_POLL_INTERVAL" default:"200ms" help:"Maximum wait between two claims of a partition when nothing is due sooner."`
	ClaimLease     time.Duration `name:"claim-lease" env:"PULSE_CLAIM_LEASE" default:"10s" help:"How long a claimed slot waits for its enqueue before another scheduler takes it over."`
	PartitionLease time.Duration `name:"partition-lease" env:"PULSE_PARTITION_LEASE" default:"3s" help:"How long a scheduler holds a partition without renewing it; a dead scheduler's partitions move to the others within 4/3 of it. Negative: every scheduler claims from every partition."`
	// Failpoint stops the process at a chosen step, for fault-injection
	// tests: "exit-after-claim" exits with status 137 right after the first
	// claim that returned slots, before enqueuing them; "stop-after-claim"
	// sends the process SIGSTOP at the same point, so a test can resume it
	// after its claims' lease ended.
	Failpoint string `name:"failpoint" env:"PULSE_FAILPOINT" hidden:"" enum:",exit-after-claim,stop-after-claim" default:"" help:"Test only: exit-after-claim or stop-after-claim."`
}

// workerFlags are the settings of the worker role.
type workerFlags struct {
	Concurrency        int           `name:"concurrency" env:"PULSE_CONCURRENCY" default:"20" help:"Handlers that run at once in this worker."`
	WorkerPollInterval time.Duration `name:"worker-poll-interval" env:"PULSE_WORKER_POLL_INTERVAL" default:"20ms" help:"Wait between two checks of an empty queue."`
	DrainTimeout       time.Duration `name:"drain-timeout" env:"PULSE_DRAIN_TIMEOUT" default:"10s" help:"How long a stopping worker lets running handlers finish before it interrupts them."`
	PluginConcurrency  int           `name:"plugin-concurrency" env:"PULSE_PLUGIN_CONCURRENCY" default:"0" help:"Executions of one plugin endpoint that run at once in this worker; further slots of that endpoint wait without taking a place. 0 means a quarter of --concurrency, at least 1."`
	PluginIdleTimeout  time.Duration `name:"plugin-idle-timeout" env:"PULSE_PLUGIN_IDLE_TIMEOUT" default:"5m" help:"Close the connection to a plugin endpoint that no execution used for this long."`
	PluginCAFile       string        `name:"plugin-ca-file" env:"PULSE_PLUGIN_CA_FILE" placeholder:"PATH" help:"PEM file of the CA certificates that verify grpcs:// plugin endpoints. Default: the system's roots."`
}

func (f redisFlags) storeConfig(retention time.Duration) store.Config {
	return store.Config{Prefix: f.KeyPrefix, Partitions: f.Partitions, DeletedRetention: retention}
}

func (f apiFlags) serviceConfig(now func() time.Time) api.Config {
	retries := f.DefaultRetries
	if retries == 0 {
		retries = -1 // api.Config reads zero as its default
	}
	return api.Config{
		Limits:          api.Limits{MaxPayloadBytes: f.MaxPayloadBytes, MinInterval: f.MinInterval},
		DefaultTimeout:  f.DefaultTimeout,
		DefaultMaxRetry: retries,
		Now:             now,
	}
}

func (f schedulerFlags) config() scheduler.Config {
	return scheduler.Config{PollInterval: f.PollInterval, ClaimLease: f.ClaimLease, PartitionLease: f.PartitionLease}
}

func (f workerFlags) config() (worker.Config, error) {
	cfg := worker.Config{
		Concurrency: f.Concurrency, PollInterval: f.WorkerPollInterval, DrainTimeout: f.DrainTimeout,
		PluginConcurrency: f.PluginConcurrency, PluginIdleTimeout: f.PluginIdleTimeout,
	}
	if f.PluginConcurrency < 0 {
		return cfg, fmt.Errorf("--plugin-concurrency %d is invalid: it must be 0 (a quarter of --concurrency) or more", f.PluginConcurrency)
	}
	if f.PluginCAFile != "" {
		pem, err := os.ReadFile(f.PluginCAFile)
		if err != nil {
			return cfg, fmt.Errorf("--plugin-ca-file: %w", err)
		}
		cfg.PluginRootCAs = x509.NewCertPool()
		if !cfg.PluginRootCAs.AppendCertsFromPEM(pem) {
			return cfg, fmt.Errorf("--plugin-ca-file %s is invalid: it contains no PEM certificate", f.PluginCAFile)
		}
	}
	return cfg, nil
}
