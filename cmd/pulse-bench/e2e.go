package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// The end-to-end scenario runs e2eSchedules schedules of one e2eInterval,
// due evenly spread, so e2eSchedules/e2eInterval slots are due per second.
const (
	e2eSchedules   = 10000
	e2eInterval    = 10 * time.Second
	e2eWarmUp      = 3 * time.Second
	e2eWindow      = 10 * time.Second
	e2eConcurrency = 20 // the worker's default
)

// rawWorkerCommand is the hidden first argument that makes pulse-bench run
// a bare asynq server, the baseline of the worker's processing rate.
const rawWorkerCommand = "_raw-asynq-worker"

func e2eScenario(ctx context.Context, e *env) ([]figure, error) {
	if err := e.reset(ctx); err != nil {
		return nil, err
	}
	if _, err := createSchedules(ctx, e.store, e2eSchedules, e2eInterval); err != nil {
		return nil, err
	}
	members, err := dueMembers(ctx, e)
	if err != nil {
		return nil, err
	}
	now, err := e.redisTime(ctx)
	if err != nil {
		return nil, err
	}
	if err := setDue(ctx, e, members, func(int) time.Time { return now.Add(time.Hour) }); err != nil {
		return nil, err
	}

	worker, err := e.startPulse(ctx, "worker", fmt.Sprintf("PULSE_CONCURRENCY=%d", e2eConcurrency), os.Getenv("BENCH_WORKER_ENV"))
	if err != nil {
		return nil, err
	}
	defer worker.stop()
	sched, err := e.startPulse(ctx, "scheduler")
	if err != nil {
		return nil, err
	}
	defer sched.stop()

	now, err = e.redisTime(ctx)
	if err != nil {
		return nil, err
	}
	start := now.Add(time.Second).Truncate(time.Millisecond)
	if err := setDue(ctx, e, members, func(i int) time.Time {
		return start.Add(time.Duration(int64(i) * int64(e2eInterval) / e2eSchedules))
	}); err != nil {
		return nil, err
	}
	if !sleepUntil(ctx, start.Add(e2eWarmUp)) {
		return nil, ctx.Err()
	}
	startBefore, err := worker.histogram("pulse_worker_start_lateness_seconds")
	if err != nil {
		return nil, err
	}
	dispatchBefore, err := sched.histogram("pulse_scheduler_dispatch_lateness_seconds")
	if err != nil {
		return nil, err
	}
	if !sleepUntil(ctx, start.Add(e2eWarmUp+e2eWindow)) {
		return nil, ctx.Err()
	}
	startAfter, err := worker.histogram("pulse_worker_start_lateness_seconds")
	if err != nil {
		return nil, err
	}
	dispatchAfter, err := sched.histogram("pulse_scheduler_dispatch_lateness_seconds")
	if err != nil {
		return nil, err
	}
	sched.stop()
	worker.stop()
	started := startAfter.sub(startBefore)
	dispatched := dispatchAfter.sub(dispatchBefore)

	pulseRate, err := workerRate(ctx, e)
	if err != nil {
		return nil, fmt.Errorf("worker rate: %w", err)
	}
	rawRate, err := rawWorkerRate(ctx, e, e2eSchedules)
	if err != nil {
		return nil, fmt.Errorf("raw asynq worker rate: %w", err)
	}

	name := fmt.Sprintf("end to end, %d due/s", int(e2eSchedules/e2eInterval.Seconds()))
	return []figure{
		{scenario: name, name: "executions started per second in the window", unit: "/s", value: float64(started.count) / e2eWindow.Seconds()},
		{scenario: name, name: "slot to handler start p50 (histogram estimate)", unit: "ms", value: started.quantile(0.50) * 1000},
		{scenario: name, name: "slot to handler start p99 (histogram estimate)", unit: "ms", value: started.quantile(0.99) * 1000,
			target: "≤ 250 ms", met: func(v, _ float64) bool { return v <= 250 }},
		{scenario: name, name: "slot to enqueue p99 (histogram estimate)", unit: "ms", value: dispatched.quantile(0.99) * 1000},
		{scenario: name, name: fmt.Sprintf("worker backlog of %dk slots: tasks/s", e2eSchedules/1000), unit: "/s", value: pulseRate,
			baseline: fmt.Sprintf("bare asynq server, no-op handler, concurrency %d", e2eConcurrency), baselineValue: rawRate},
	}, nil
}

// workerRate enqueues a slot of every schedule with the workers off, then
// starts a worker process and returns the slots it runs per second until the
// backlog is done.
func workerRate(ctx context.Context, e *env) (float64, error) {
	members, err := dueMembers(ctx, e)
	if err != nil {
		return 0, err
	}
	total := len(flatten(members))
	if _, err := runBurst(ctx, e, total); err != nil {
		return 0, err
	}
	worker, err := e.startPulse(ctx, "worker", fmt.Sprintf("PULSE_CONCURRENCY=%d", e2eConcurrency))
	if err != nil {
		return 0, err
	}
	defer worker.stop()

	first, err := worker.counter("pulse_worker_executions_total")
	if err != nil {
		return 0, err
	}
	from := time.Now()
	deadline := from.Add(2 * time.Minute)
	for {
		done, err := worker.counter("pulse_worker_executions_total")
		if err != nil {
			return 0, err
		}
		if int(done) >= total {
			return (done - first) / time.Since(from).Seconds(), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%d of %d slots ran within 2 minutes", int(done), total)
		}
		if !sleepCtx(ctx, 20*time.Millisecond) {
			return 0, ctx.Err()
		}
	}
}

// rawWorkerRate enqueues n no-op tasks and runs a bare asynq server in a
// child process until it has processed them. It returns the tasks processed
// per second.
func rawWorkerRate(ctx context.Context, e *env, n int) (float64, error) {
	if err := clearAsynq(ctx, e); err != nil {
		return 0, err
	}
	client := asynq.NewClientFromRedisClient(e.rdb)
	for i := 0; i < n; i++ {
		if _, err := client.EnqueueContext(ctx, asynq.NewTask("bench:noop", nil, asynq.Queue(asynqQueue))); err != nil {
			return 0, err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, self, rawWorkerCommand, "--redis", e.redis.Addr(), "--tasks", strconv.Itoa(n),
		"--concurrency", strconv.Itoa(e2eConcurrency))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, err
	}
	return strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
}

// runRawWorker is the child process of rawWorkerRate: it processes tasks
// with a no-op handler until it has processed the given count, then prints
// the tasks processed per second, counted from the first task.
func runRawWorker(args []string) error {
	fs := flag.NewFlagSet(rawWorkerCommand, flag.ContinueOnError)
	addr := fs.String("redis", "", "Redis address")
	tasks := fs.Int("tasks", 0, "tasks to process")
	concurrency := fs.Int("concurrency", e2eConcurrency, "handlers at once")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: *addr})
	defer rdb.Close()

	var processed atomic.Int64
	var first atomic.Int64
	done := make(chan struct{})
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:       *concurrency,
		Queues:            map[string]int{asynqQueue: 1},
		TaskCheckInterval: 100 * time.Millisecond,
		LogLevel:          asynq.ErrorLevel,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc("bench:noop", func(context.Context, *asynq.Task) error {
		first.CompareAndSwap(0, time.Now().UnixNano())
		if processed.Add(1) == int64(*tasks) {
			close(done)
		}
		return nil
	})
	if err := srv.Start(mux); err != nil {
		return err
	}
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		srv.Shutdown()
		return fmt.Errorf("%d of %d tasks processed within 2 minutes", processed.Load(), *tasks)
	}
	elapsed := time.Since(time.Unix(0, first.Load()))
	srv.Shutdown()
	fmt.Println(float64(*tasks) / elapsed.Seconds())
	return nil
}
