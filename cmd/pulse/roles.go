package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/pulse-sched/pulse/api"
	"github.com/pulse-sched/pulse/internal/admin"
	"github.com/pulse-sched/pulse/internal/metrics"
	"github.com/pulse-sched/pulse/internal/redisconn"
	"github.com/pulse-sched/pulse/scheduler"
	"github.com/pulse-sched/pulse/store"
	"github.com/pulse-sched/pulse/worker"
)

type serveCmd struct {
	redisFlags     `embed:""`
	apiFlags       `embed:""`
	schedulerFlags `embed:""`
	workerFlags    `embed:""`

	DevToken    string `name:"dev-token" env:"PULSE_DEV_TOKEN" placeholder:"TOKEN" help:"Token of the development plugin \"dev\" when the embedded Redis runs without a plugins file. Default: a random token printed at start."`
	DevEndpoint string `name:"dev-endpoint" env:"PULSE_DEV_ENDPOINT" placeholder:"ENDPOINT" help:"Handler endpoint of the development plugin \"dev\" (host:port, grpc://host:port or grpcs://host:port), so that its schedules can run the handlers it serves. Default: none, only built-in handlers."`
}

type apiCmd struct {
	redisFlags `embed:""`
	apiFlags   `embed:""`
}

type schedulerCmd struct {
	redisFlags     `embed:""`
	schedulerFlags `embed:""`
}

type workerCmd struct {
	redisFlags  `embed:""`
	workerFlags `embed:""`
}

// roles selects what one process runs, with the settings of each.
type roles struct {
	redis     redisFlags
	api       *apiFlags
	scheduler *schedulerFlags
	worker    *workerFlags
	// embedded allows an in-memory Redis when no URL is given.
	embedded    bool
	devToken    string
	devEndpoint string
}

func (c *serveCmd) Run(ctx context.Context, g *globals) error {
	return runRoles(ctx, g, roles{
		redis: c.redisFlags, api: &c.apiFlags, scheduler: &c.schedulerFlags, worker: &c.workerFlags,
		embedded: true, devToken: c.DevToken, devEndpoint: c.DevEndpoint,
	})
}

func (c *apiCmd) Run(ctx context.Context, g *globals) error {
	return runRoles(ctx, g, roles{redis: c.redisFlags, api: &c.apiFlags})
}

func (c *schedulerCmd) Run(ctx context.Context, g *globals) error {
	return runRoles(ctx, g, roles{redis: c.redisFlags, scheduler: &c.schedulerFlags})
}

func (c *workerCmd) Run(ctx context.Context, g *globals) error {
	return runRoles(ctx, g, roles{redis: c.redisFlags, worker: &c.workerFlags})
}

// runRoles runs the selected roles until ctx ends or one of them fails.
func runRoles(ctx context.Context, g *globals, r roles) (err error) {
	logger := g.logger

	// Check the command line and take the listen addresses before anything
	// waits for Redis or starts, so a mistake fails at once and alone.
	if err := r.preflight(); err != nil {
		return err
	}
	lis, err := r.listen()
	if err != nil {
		return err
	}
	defer lis.closeUnused()

	rdb, closeRedis, err := connectRedis(ctx, g, r)
	if err != nil {
		return err
	}
	defer closeRedis()

	storeConfig := r.redis.storeConfig(store.DeletedRetentionDefault)
	if r.api != nil {
		storeConfig = r.redis.storeConfig(r.api.DeletedRetention)
		storeConfig.WaitReplicas = r.api.WaitReplicas
		storeConfig.WaitTimeout = r.api.WaitTimeout
	}
	st, err := store.New(rdb, storeConfig)
	if err != nil {
		return usageError("%v", err)
	}
	if err := st.Init(ctx); err != nil {
		return fmt.Errorf("prepare Redis: %w", err)
	}

	now := func() time.Time { return time.Now().Add(r.redis.ClockOffset) }
	reg, m := newMetrics(rdb, st, logger)
	adminHandler := admin.NewHandler(reg)
	adminHandler.AddCheck("redis", st.Ping)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	group, ctx := errgroup.WithContext(ctx)
	// A role that fails to set up stops those already started before Redis
	// closes under them.
	defer func() {
		if err != nil {
			cancel()
			_ = group.Wait()
		}
	}()

	monitor := scheduler.NewMonitor(st, r.redis.OverdueCheck, logger, m)
	group.Go(func() error { return monitor.Run(ctx) })
	banner := func() {}
	if r.api != nil {
		if banner, err = startAPI(ctx, group, g, r, lis.take(&lis.grpc), rdb, st, m, reg, adminHandler, now); err != nil {
			return err
		}
	}
	if r.scheduler != nil {
		m.RegisterScheduler(reg)
		// The scheduler enqueues many slots at once, each one asynq script
		// call. go-redis's autopipeliner sends the calls of concurrent
		// enqueues to Redis as one pipeline, which saves a round trip and a
		// read and write system call per slot on both sides.
		enqueueRedis, err := rdb.AutoPipeline()
		if err != nil {
			return fmt.Errorf("set up pipelined enqueues: %w", err)
		}
		defer enqueueRedis.Close()
		client := asynq.NewClientFromRedisClient(enqueueRedis)
		s, err := scheduler.New(st, client, r.scheduler.config(), logger, m)
		if err != nil {
			return usageError("%v", err)
		}
		installFailpoint(s, r.scheduler.Failpoint, logger)
		adminHandler.AddCheck("scheduler", func(context.Context) error {
			if time.Since(s.LastPass()) > 30*time.Second {
				return errors.New("no claim pass reached Redis in the last 30s")
			}
			return nil
		})
		group.Go(func() error { return s.Run(ctx) })
	}
	if r.worker != nil {
		cfg, err := r.worker.config()
		if err != nil {
			return usageError("%v", err)
		}
		w, err := worker.New(rdb, st, cfg, logger, m)
		if err != nil {
			return usageError("%v", err)
		}
		adminHandler.AddCheck("worker", func(context.Context) error {
			if !w.Started() {
				return errors.New("the worker does not take tasks")
			}
			return nil
		})
		group.Go(func() error { return w.Run(ctx) })
	}
	if lis.http != nil {
		startHTTP(ctx, group, logger, lis.take(&lis.http), adminHandler)
	}
	banner()

	err = group.Wait()
	logger.Info("pulse stopped")
	return err
}

// preflight checks the settings that need neither Redis nor a port.
func (r roles) preflight() error {
	if r.api == nil {
		return nil
	}
	devMode := r.embedded && r.redis.RedisURL == "" && r.api.PluginsFile == ""
	switch {
	case r.devEndpoint != "" && !devMode:
		return usageError("--dev-endpoint (PULSE_DEV_ENDPOINT) applies only to the development plugin, without --redis-url and --plugins-file: give the endpoint in the plugins file instead")
	case r.api.PluginsFile == "" && !devMode:
		return usageError("--plugins-file (PULSE_PLUGINS_FILE) is required with a real Redis: it lists the plugins and the SHA-256 of their tokens (see docs/configuration.md)")
	}
	return nil
}

// listeners are the sockets of one process, opened before any role starts.
type listeners struct {
	grpc, http net.Listener
}

// listen opens the gRPC listener of the API role and the admin HTTP
// listener, as the settings ask.
func (r roles) listen() (*listeners, error) {
	l := &listeners{}
	if r.api != nil {
		lis, err := net.Listen("tcp", r.api.GRPCAddr)
		if err != nil {
			return nil, listenError("gRPC", r.api.GRPCAddr, "--grpc-addr (PULSE_GRPC_ADDR)", err)
		}
		l.grpc = lis
	}
	if r.redis.HTTPAddr != "" {
		lis, err := net.Listen("tcp", r.redis.HTTPAddr)
		if err != nil {
			l.closeUnused()
			return nil, listenError("HTTP", r.redis.HTTPAddr, "--http-addr (PULSE_HTTP_ADDR)", err)
		}
		l.http = lis
	}
	return l, nil
}

// take hands a listener over to its server, which closes it from then on.
func (l *listeners) take(lis *net.Listener) net.Listener {
	taken := *lis
	*lis = nil
	return taken
}

// closeUnused closes the listeners that no server took.
func (l *listeners) closeUnused() {
	for _, lis := range []net.Listener{l.grpc, l.http} {
		if lis != nil {
			lis.Close()
		}
	}
}

// connectRedis returns the client of the configured Redis, or of an
// embedded one when none is configured and the command allows it.
func connectRedis(ctx context.Context, g *globals, r roles) (redis.UniversalClient, func(), error) {
	logger := g.logger
	if r.redis.RedisURL == "" {
		if !r.embedded {
			return nil, nil, usageError("--redis-url (PULSE_REDIS_URL) is required: give the Redis that keeps the schedules, such as redis://127.0.0.1:6379/0")
		}
		mr := miniredis.NewMiniRedis()
		if err := mr.StartAddr("127.0.0.1:0"); err != nil {
			return nil, nil, fmt.Errorf("start embedded Redis: %w", err)
		}
		logger.Warn("no --redis-url given: running on an embedded in-memory Redis, nothing persists after this process stops",
			"embedded_redis_addr", mr.Addr())
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		return rdb, func() { rdb.Close(); mr.Close() }, nil
	}

	rdb, err := redisconn.NewClient(r.redis.RedisURL)
	if err != nil {
		return nil, nil, usageError("%v", err)
	}
	if err := waitForRedis(ctx, logger, rdb, r.redis.RedisURL); err != nil {
		rdb.Close()
		return nil, nil, &exitError{code: exitUnavailable, message: err.Error()}
	}
	if err := redisconn.CheckEvictionPolicy(ctx, rdb); err != nil {
		if !r.redis.AllowEviction {
			rdb.Close()
			return nil, nil, err
		}
		logger.Warn("Redis may evict keys and so lose schedules; starting anyway because of --allow-eviction", "error", err)
	}
	return rdb, func() { rdb.Close() }, nil
}

// redisStartTimeout bounds how long a starting process waits for Redis.
const redisStartTimeout = 30 * time.Second

func waitForRedis(ctx context.Context, logger *slog.Logger, rdb redis.UniversalClient, url string) error {
	deadline := time.Now().Add(redisStartTimeout)
	for attempt := 1; ; attempt++ {
		pingCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := rdb.Ping(pingCtx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("redis at %s is unreachable after %s: %v", redisconn.Redact(url), redisStartTimeout, err)
		}
		logger.Warn("waiting for Redis", "redis_url", redisconn.Redact(url), "attempt", attempt, "error", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// startAPI loads the plugin registry and serves the gRPC API and, on the
// admin HTTP server, the monitoring console.
// startAPI loads the plugin registry and serves the gRPC API on lis. It
// returns a function that prints the development token, if any, once the
// whole process has started.
func startAPI(ctx context.Context, group *errgroup.Group, g *globals, r roles, lis net.Listener, rdb redis.UniversalClient, st *store.Store, m *metrics.Metrics, reg *prometheus.Registry, adminHandler *admin.Handler, now func() time.Time) (func(), error) {
	logger := g.logger
	banner := func() {}
	m.RegisterAPI(reg)
	registry := api.NewRegistry()
	devMode := false
	switch {
	case r.api.PluginsFile != "":
		file := api.NewRegistryFile(registry, r.api.PluginsFile, logger, m)
		if err := file.Load(); err != nil {
			return nil, usageError("%v", err)
		}
		m.RegistryLastReloadSuccess.SetToCurrentTime()
		plugins, admins := registry.Size()
		logger.Info("plugin registry loaded", "path", r.api.PluginsFile, "plugins", plugins, "admins", admins)
		if plugins+admins == 0 {
			logger.Warn("the plugins file lists no plugin and no admin, so every call is rejected as unauthenticated", "path", r.api.PluginsFile)
		}
		if err := file.Watch(ctx); err != nil {
			logger.Warn("the plugins file is not watched for changes; reload it with SIGHUP", "path", r.api.PluginsFile, "error", err)
		}
		watchReloadSignal(ctx, file)
	case r.embedded && r.redis.RedisURL == "":
		token, err := devRegistry(registry, r.devToken, r.devEndpoint)
		if err != nil {
			return nil, usageError("%v", err)
		}
		m.RegistryLastReloadSuccess.SetToCurrentTime()
		devMode = true
		banner = func() {
			fmt.Fprintf(g.stdout, "\nDevelopment mode: plugin \"dev\" accepts this token (not for production):\n\n    export PULSE_TOKEN=%s\n\n", token)
			if r.devEndpoint != "" {
				fmt.Fprintf(g.stdout, "Its schedules call the handlers that it serves on %s.\n\n", r.devEndpoint)
			}
		}
	}

	svc, err := api.NewService(st, registry, r.api.serviceConfig(now), logger, m)
	if err != nil {
		return nil, usageError("%v", err)
	}
	healthServer := health.NewServer()
	grpcMetrics := metrics.NewGRPCServerMetrics()
	reg.MustRegister(grpcMetrics)
	grpcServer := api.NewGRPCServer(svc, healthServer, logger, metrics.GRPCServerOptions(grpcMetrics)...)
	grpcMetrics.InitializeMetrics(grpcServer)
	adminHandler.AddCheck("api", apiReadiness(healthServer))
	if r.api.Monitoring {
		mountMonitoring(adminHandler, rdb, registry, devMode, r.api.MonitoringWritable, logger)
	}
	logger.Info("gRPC API listening", "addr", lis.Addr().String())

	group.Go(func() error {
		if err := grpcServer.Serve(lis); err != nil {
			return fmt.Errorf("serve gRPC: %w", err)
		}
		return nil
	})
	group.Go(func() error {
		reportHealth(ctx, logger, healthServer, st)
		stopped := make(chan struct{})
		go func() {
			grpcServer.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			logger.Warn("gRPC calls still running after 10s, closing them")
			grpcServer.Stop()
		}
		return nil
	})
	return banner, nil
}

// reportHealth sets the gRPC health status from Redis reachability every few
// seconds until ctx ends, then reports NOT_SERVING.
func reportHealth(ctx context.Context, logger *slog.Logger, hs *health.Server, st *store.Store) {
	set := func(s healthpb.HealthCheckResponse_ServingStatus) {
		hs.SetServingStatus("", s)
		hs.SetServingStatus(api.ServiceName, s)
	}
	last := healthpb.HealthCheckResponse_UNKNOWN
	for {
		pingCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := st.Ping(pingCtx)
		cancel()
		status := healthpb.HealthCheckResponse_SERVING
		if err != nil {
			status = healthpb.HealthCheckResponse_NOT_SERVING
		}
		if status != last && ctx.Err() == nil {
			logger.Info("gRPC health changed", "status", status.String(), "error", err)
			last = status
		}
		set(status)

		select {
		case <-ctx.Done():
			hs.Shutdown()
			return
		case <-time.After(5 * time.Second):
		}
	}
}

// devPlugin is the ats_code of the development plugin.
const devPlugin = "dev"

// devRegistry fills registry with the development plugin "dev", with the
// given endpoint if any, and returns its token.
func devRegistry(registry *api.Registry, token, endpoint string) (string, error) {
	if token == "" {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return "", fmt.Errorf("make development token: %w", err)
		}
		token = "dev-" + hex.EncodeToString(b)
	}
	yaml := fmt.Sprintf("plugins:\n  - ats_code: %s\n    token_sha256: %q\n", devPlugin, api.TokenDigest(token))
	if endpoint != "" {
		yaml += fmt.Sprintf("    endpoint: %q\n", endpoint)
	}
	if err := registry.Load([]byte(yaml)); err != nil {
		return "", fmt.Errorf("development plugin: %w", err)
	}
	return token, nil
}

// watchReloadSignal reloads the plugins file on every SIGHUP until ctx
// ends. A file that fails to load leaves the previous registry in place.
func watchReloadSignal(ctx context.Context, file *api.RegistryFile) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				file.Reload(api.TriggerSignal, true)
			}
		}
	}()
}

// startHTTP serves the admin endpoints on lis until ctx ends.
func startHTTP(ctx context.Context, group *errgroup.Group, logger *slog.Logger, lis net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	logger.Info("HTTP admin server listening", "addr", lis.Addr().String())

	group.Go(func() error {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve HTTP: %w", err)
		}
		return nil
	})
	group.Go(func() error {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(shutdownCtx)
	})
}

// installFailpoint makes the scheduler stop at the step a fault-injection
// test names; see schedulerFlags.Failpoint.
func installFailpoint(s *scheduler.Scheduler, failpoint string, logger *slog.Logger) {
	var once sync.Once
	switch failpoint {
	case "exit-after-claim":
		s.SetBeforeEnqueue(func(claimed []store.ClaimedSlot) {
			logger.Warn("failpoint exit-after-claim: exiting before the enqueue", "ranges", len(claimed))
			os.Exit(137)
		})
	case "stop-after-claim":
		s.SetBeforeEnqueue(func(claimed []store.ClaimedSlot) {
			once.Do(func() {
				logger.Warn("failpoint stop-after-claim: stopping before the enqueue", "ranges", len(claimed))
				_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
				// The signal stops the process a moment later, not within
				// Kill; wait here so that the stop comes before the enqueue.
				time.Sleep(time.Second)
			})
		})
	}
}

// listenError explains a failed listen, naming the setting that picks
// another address when the address is taken.
func listenError(kind, addr, setting string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("listen for %s on %s: another process uses this address: stop it or choose another address with %s", kind, addr, setting)
	}
	return fmt.Errorf("listen for %s on %s: %w", kind, addr, err)
}
