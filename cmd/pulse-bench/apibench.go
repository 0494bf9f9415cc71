package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/pulse-sched/pulse/api"
	"github.com/pulse-sched/pulse/proto/protocolpb"
)

// The API scenario calls one API process from apiClients goroutines, each
// with its own connection, for apiPhase per method.
const (
	apiClients  = 50
	apiPhase    = 5 * time.Second
	apiToken    = "bench-token"
	apiRequests = 200000 // per redis-benchmark test
)

// callStats is the outcome of one phase of calls.
type callStats struct {
	perSecond float64
	p99       time.Duration
	// apiCPU, clientCPU and redisCPU are the CPU time per call of the API
	// process, of this benchmark's gRPC clients and of redis-server.
	apiCPU, clientCPU, redisCPU time.Duration
}

// cpuMeter reads the CPU time of the processes that a phase of calls uses.
type cpuMeter struct {
	api, client, redis float64
}

func readCPU(e *env, apiPID int) (cpuMeter, error) {
	var m cpuMeter
	var err error
	if m.api, err = cpuSeconds(apiPID); err != nil {
		return m, err
	}
	if m.client, err = cpuSeconds(os.Getpid()); err != nil {
		return m, err
	}
	m.redis, err = cpuSeconds(e.redis.PID())
	return m, err
}

// perCall sets the CPU figures of st from meter readings around n calls.
func (st *callStats) perCall(before, after cpuMeter, n float64) {
	per := func(seconds float64) time.Duration { return time.Duration(seconds / n * float64(time.Second)) }
	st.apiCPU = per(after.api - before.api)
	st.clientCPU = per(after.client - before.client)
	st.redisCPU = per(after.redis - before.redis)
}

func apiScenario(ctx context.Context, e *env) ([]figure, error) {
	if err := e.reset(ctx); err != nil {
		return nil, err
	}
	plugins := filepath.Join(e.dir, "plugins.yaml")
	yaml := fmt.Sprintf("plugins:\n  - ats_code: %s\n    token_sha256: %q\n", benchOwner, api.TokenDigest(apiToken))
	if err := os.WriteFile(plugins, []byte(yaml), 0o600); err != nil {
		return nil, err
	}
	apiProc, err := e.startPulse(ctx, "api", "PULSE_PLUGINS_FILE="+plugins)
	if err != nil {
		return nil, err
	}
	defer apiProc.stop()

	conns := make([]protocolpb.ScheduleServiceClient, apiClients)
	for i := range conns {
		conn, err := grpc.NewClient(apiProc.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		conns[i] = protocolpb.NewScheduleServiceClient(conn)
	}

	payload, metadata := benchPayload(), benchMetadata()
	var mu sync.Mutex
	var ids []string
	create, err := callPhase(ctx, e, apiProc.cmd.Process.Pid, conns, func(ctx context.Context, c protocolpb.ScheduleServiceClient) error {
		resp, err := c.CreateSchedule(ctx, &protocolpb.CreateScheduleRequest{
			AuthToken: apiToken, HandlerName: benchHandler, IntervalSeconds: 3600, Payload: payload, Metadata: metadata,
		})
		if err != nil {
			return err
		}
		if !resp.GetSuccess() {
			return fmt.Errorf("CreateSchedule: %s: %s", resp.GetErrorCode(), resp.GetError())
		}
		mu.Lock()
		ids = append(ids, resp.GetScheduleId())
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	get, err := callPhase(ctx, e, apiProc.cmd.Process.Pid, conns, func(ctx context.Context, c protocolpb.ScheduleServiceClient) error {
		resp, err := c.GetSchedule(ctx, &protocolpb.GetScheduleRequest{AuthToken: apiToken, ScheduleId: ids[rand.IntN(len(ids))]})
		if err != nil {
			return err
		}
		if !resp.GetSuccess() {
			return fmt.Errorf("GetSchedule: %s: %s", resp.GetErrorCode(), resp.GetError())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	apiProc.stop()

	hset, err := redisBenchmark(ctx, e, "-t", "hset")
	if err != nil {
		return nil, err
	}
	// An HGETALL of a hash shaped like a schedule hash after its first run.
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	if err := e.rdb.HSet(ctx, "bench:hash", "ats", benchOwner, "st", "active", "iv", "3600000", "an", now, "nx", now,
		"gen", "1", "ca", now, "ua", now, "ls", now, "lx", "01JDQ5VE0000000000000000AB", "la", "0", "lo", "succeeded").Err(); err != nil {
		return nil, err
	}
	hgetall, err := redisBenchmark(ctx, e, "HGETALL", "bench:hash")
	if err != nil {
		return nil, err
	}

	name := fmt.Sprintf("API, %d gRPC clients", apiClients)
	p99Target := func(v, _ float64) bool { return v <= 10 }
	return []figure{
		{scenario: name, name: "CreateSchedule calls/s", unit: "/s", value: create.perSecond,
			baseline: "redis-benchmark -t hset -c 50", baselineValue: hset.perSecond,
			target: "≥ 0.15×", met: func(_, r float64) bool { return r >= 0.15 }},
		{scenario: name, name: "CreateSchedule p99", unit: "ms", value: ms(create.p99),
			baseline: "HSET p99", baselineValue: ms(hset.p99), target: "≤ 10 ms", met: p99Target},
		{scenario: name, name: "GetSchedule calls/s", unit: "/s", value: get.perSecond,
			baseline: "redis-benchmark HGETALL -c 50", baselineValue: hgetall.perSecond,
			target: "≥ 0.3×", met: func(_, r float64) bool { return r >= 0.3 }},
		{scenario: name, name: "GetSchedule p99", unit: "ms", value: ms(get.p99),
			baseline: "HGETALL p99", baselineValue: ms(hgetall.p99), target: "≤ 10 ms", met: p99Target},
		{scenario: name, name: "CPU per CreateSchedule: API process", unit: "µs", value: us(create.apiCPU)},
		{scenario: name, name: "CPU per CreateSchedule: benchmark's gRPC clients", unit: "µs", value: us(create.clientCPU)},
		{scenario: name, name: "CPU per CreateSchedule: redis-server", unit: "µs", value: us(create.redisCPU)},
		{scenario: name, name: "CPU per GetSchedule: API process", unit: "µs", value: us(get.apiCPU)},
		{scenario: name, name: "CPU per GetSchedule: benchmark's gRPC clients", unit: "µs", value: us(get.clientCPU)},
		{scenario: name, name: "CPU per GetSchedule: redis-server", unit: "µs", value: us(get.redisCPU)},
	}, nil
}

// callPhase runs call from one goroutine per connection for apiPhase and
// returns the calls per second and the p99 latency.
func callPhase(ctx context.Context, e *env, apiPID int, conns []protocolpb.ScheduleServiceClient, call func(context.Context, protocolpb.ScheduleServiceClient) error) (callStats, error) {
	before, err := readCPU(e, apiPID)
	if err != nil {
		return callStats{}, err
	}
	var (
		mu       sync.Mutex
		all      []time.Duration
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(apiPhase)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(end) && ctx.Err() == nil {
				t := time.Now()
				callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := call(callCtx, c)
				cancel()
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return callStats{}, firstErr
	}
	after, err := readCPU(e, apiPID)
	if err != nil {
		return callStats{}, err
	}
	st := callStats{perSecond: float64(len(all)) / time.Since(start).Seconds(), p99: percentile(all, 0.99)}
	st.perCall(before, after, float64(len(all)))
	return st, nil
}

// redisBenchmark runs redis-benchmark against the benchmark's Redis with 50
// clients and returns its requests per second and p99 latency.
func redisBenchmark(ctx context.Context, e *env, args ...string) (callStats, error) {
	full := append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(e.redis.Port()), "-c", strconv.Itoa(apiClients),
		"-n", strconv.Itoa(apiRequests), "--csv"}, args...)
	out, err := exec.CommandContext(ctx, "redis-benchmark", full...).Output()
	if err != nil {
		return callStats{}, fmt.Errorf("redis-benchmark %s: %w", strings.Join(full, " "), err)
	}
	records, err := csv.NewReader(strings.NewReader(string(out))).ReadAll()
	if err != nil || len(records) < 2 {
		return callStats{}, fmt.Errorf("redis-benchmark output is not the expected CSV: %v\n%s", err, out)
	}
	header, row := records[0], records[1]
	column := func(name string) (float64, error) {
		for i, h := range header {
			if h == name && i < len(row) {
				return strconv.ParseFloat(row[i], 64)
			}
		}
		return 0, fmt.Errorf("redis-benchmark CSV has no column %q: %s", name, out)
	}
	rps, err := column("rps")
	if err != nil {
		return callStats{}, err
	}
	p99, err := column("p99_latency_ms")
	if err != nil {
		return callStats{}, err
	}
	return callStats{perSecond: rps, p99: time.Duration(p99 * float64(time.Millisecond))}, nil
}
