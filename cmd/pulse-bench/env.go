package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"

	"github.com/pulse-sched/pulse/internal/redisproc"
	"github.com/pulse-sched/pulse/store"
)

// env is the state that every scenario shares: one redis-server, a client
// of it, a store on it and the pulse binary that scenarios run as separate
// processes.
type env struct {
	logger *slog.Logger
	dir    string
	redis  *redisproc.Server
	rdb    *redis.Client
	store  *store.Store
	pulse  string
}

func newEnv(ctx context.Context, logger *slog.Logger, pulseBinary string) (*env, error) {
	dir, err := os.MkdirTemp("", "pulse-bench-")
	if err != nil {
		return nil, err
	}
	srv, err := redisproc.Start(redisproc.Options{Dir: filepath.Join(dir, "redis"), Args: []string{"--loglevel", "warning"}})
	if err != nil {
		return nil, err
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 128, ReadTimeout: 10 * time.Second})
	st, err := store.New(rdb, store.Config{})
	if err != nil {
		return nil, err
	}
	e := &env{logger: logger, dir: dir, redis: srv, rdb: rdb, store: st, pulse: pulseBinary}
	return e, e.reset(ctx)
}

func (e *env) close() {
	e.rdb.Close()
	e.redis.Stop()
	os.RemoveAll(e.dir)
}

// reset empties Redis and records the partition count again.
func (e *env) reset(ctx context.Context) error {
	if err := e.rdb.FlushAll(ctx).Err(); err != nil {
		return fmt.Errorf("FLUSHALL: %w", err)
	}
	return e.store.Init(ctx)
}

// usedMemory returns INFO memory's used_memory in bytes.
func (e *env) usedMemory(ctx context.Context) (int64, error) {
	info, err := e.rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("INFO memory has no used_memory")
}

// redisTime returns the Redis server time.
func (e *env) redisTime(ctx context.Context) (time.Time, error) {
	return e.rdb.Time(ctx).Result()
}

// proc is a pulse process that a scenario started.
type proc struct {
	name     string
	cmd      *exec.Cmd
	httpAddr string
	grpcAddr string
	done     chan struct{}
	log      string
}

// startPulse runs "pulse <role>" on the benchmark's Redis with the admin
// HTTP server on a free port, logging at warn level to a file, and waits
// until /readyz returns 200.
func (e *env) startPulse(ctx context.Context, role string, extraEnv ...string) (*proc, error) {
	httpPort, err := redisproc.FreePort()
	if err != nil {
		return nil, err
	}
	grpcPort, err := redisproc.FreePort()
	if err != nil {
		return nil, err
	}
	p := &proc{
		name:     role,
		httpAddr: fmt.Sprintf("127.0.0.1:%d", httpPort),
		grpcAddr: fmt.Sprintf("127.0.0.1:%d", grpcPort),
		done:     make(chan struct{}),
		log:      filepath.Join(e.dir, fmt.Sprintf("%s-%d.log", role, time.Now().UnixNano())),
	}
	logFile, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(e.pulse, role)
	p.cmd.Env = append(os.Environ(),
		"PULSE_REDIS_URL="+e.redis.URL(),
		"PULSE_HTTP_ADDR="+p.httpAddr,
		"PULSE_GRPC_ADDR="+p.grpcAddr,
		"PULSE_LOG_FORMAT=json",
		"PULSE_LOG_LEVEL=warn",
	)
	p.cmd.Env = append(p.cmd.Env, extraEnv...)
	p.cmd.Stdout = logFile
	p.cmd.Stderr = logFile
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	go func() {
		_ = p.cmd.Wait()
		logFile.Close()
		close(p.done)
	}()

	deadline := time.Now().Add(30 * time.Second)
	for {
		status, _, err := p.get("/readyz")
		if err == nil && status == http.StatusOK {
			return p, nil
		}
		select {
		case <-p.done:
			out, _ := os.ReadFile(p.log)
			return nil, fmt.Errorf("pulse %s exited before it was ready:\n%s", role, out)
		case <-ctx.Done():
			p.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("pulse %s was not ready within 30s", role)
		}
	}
}

// stop ends the process with SIGTERM, and with SIGKILL after 15s.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) get(path string) (int, string, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + p.httpAddr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// metrics returns the process's metric families from /metrics.
func (p *proc) metrics() (map[string]*dto.MetricFamily, error) {
	status, body, err := p.get("/metrics")
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics of %s returned %d", p.name, status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(strings.NewReader(body))
}

// counter returns the sum of a counter's samples, 0 when it is absent.
func (p *proc) counter(name string) (float64, error) {
	families, err := p.metrics()
	if err != nil {
		return 0, err
	}
	sum := 0.0
	if f, ok := families[name]; ok {
		for _, m := range f.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum, nil
}

// histogram returns the cumulative bucket counts of a histogram without
// labels.
func (p *proc) histogram(name string) (histogram, error) {
	families, err := p.metrics()
	if err != nil {
		return histogram{}, err
	}
	f, ok := families[name]
	if !ok || len(f.GetMetric()) == 0 {
		return histogram{}, fmt.Errorf("%s exports no %s", p.name, name)
	}
	h := f.GetMetric()[0].GetHistogram()
	out := histogram{count: h.GetSampleCount()}
	for _, b := range h.GetBucket() {
		out.bounds = append(out.bounds, b.GetUpperBound())
		out.cumulative = append(out.cumulative, b.GetCumulativeCount())
	}
	return out, nil
}

// cpuSeconds returns the user plus system CPU time of a process, from
// /proc/<pid>/stat.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name in brackets may contain spaces; fields start after it.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	// NOTE: USER_HZ is 100 on every Linux architecture Go supports.
	return (utime + stime) / 100, nil
}

// memoryKB returns VmRSS and VmHWM (peak RSS) of a process in KiB.
func memoryKB(pid int) (rss, peak int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		n, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			rss = n
		case "VmHWM:":
			peak = n
		}
	}
	return rss, peak, nil
}
