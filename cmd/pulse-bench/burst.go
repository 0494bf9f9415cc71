package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"golang.org/x/sync/errgroup"

	"github.com/pulse-sched/pulse/internal/task"
	"github.com/pulse-sched/pulse/store"
)

// burstResult is the dispatch of a burst of slots that all became due at
// once.
type burstResult struct {
	rate     float64 // slots enqueued per second
	p50, p99 time.Duration
	// redisCPU is the CPU time of redis-server per slot, and schedulerCPU
	// that of the scheduler process.
	redisCPU, schedulerCPU time.Duration
}

// runBurst makes count of the stored schedules due at one instant while a
// scheduler process runs, and measures how fast it enqueues them. Every
// other stored schedule is moved an hour ahead, so only the burst is due.
func runBurst(ctx context.Context, e *env, count int) (burstResult, error) {
	if err := clearAsynq(ctx, e); err != nil {
		return burstResult{}, err
	}
	members, err := dueMembers(ctx, e)
	if err != nil {
		return burstResult{}, err
	}
	now, err := e.redisTime(ctx)
	if err != nil {
		return burstResult{}, err
	}
	if err := setDue(ctx, e, members, func(int) time.Time { return now.Add(time.Hour) }); err != nil {
		return burstResult{}, err
	}

	sched, err := e.startPulse(ctx, "scheduler")
	if err != nil {
		return burstResult{}, err
	}
	defer sched.stop()

	// The due instant lies far enough ahead that every partition loop has
	// read it before it comes, so each one wakes up exactly then.
	now, err = e.redisTime(ctx)
	if err != nil {
		return burstResult{}, err
	}
	due := now.Add(1500 * time.Millisecond).Truncate(time.Millisecond)
	redisBefore, err := cpuSeconds(e.redis.PID())
	if err != nil {
		return burstResult{}, err
	}
	schedBefore, err := cpuSeconds(sched.cmd.Process.Pid)
	if err != nil {
		return burstResult{}, err
	}
	if err := setDue(ctx, e, firstMembers(members, count), func(int) time.Time { return due }); err != nil {
		return burstResult{}, err
	}
	if err := waitPending(ctx, e, int64(count), 2*time.Minute); err != nil {
		return burstResult{}, err
	}
	redisAfter, err := cpuSeconds(e.redis.PID())
	if err != nil {
		return burstResult{}, err
	}
	schedAfter, err := cpuSeconds(sched.cmd.Process.Pid)
	if err != nil {
		return burstResult{}, err
	}

	tasks, err := pendingTasks(ctx, e)
	if err != nil {
		return burstResult{}, err
	}
	var last time.Time
	late := make([]time.Duration, 0, len(tasks))
	for _, t := range tasks {
		if t.enqueued.After(last) {
			last = t.enqueued
		}
		late = append(late, t.lateness())
	}
	return burstResult{
		rate:         float64(len(tasks)) / last.Sub(due).Seconds(),
		p50:          percentile(late, 0.50),
		p99:          percentile(late, 0.99),
		redisCPU:     perItem(redisAfter-redisBefore, count),
		schedulerCPU: perItem(schedAfter-schedBefore, count),
	}, nil
}

// slotTasks returns n slot tasks as the scheduler builds them, with task IDs.
func slotTasks(n int) []*asynq.Task {
	tasks := make([]*asynq.Task, n)
	base := time.Now().Truncate(time.Millisecond)
	for i := range tasks {
		slot := task.Slot{
			SlotRef:  store.SlotRef{ScheduleID: fmt.Sprintf("01BENCH%019d", i), Slot: base, Generation: 1},
			MaxRetry: 3,
		}
		tasks[i] = asynq.NewTask(task.TypeSlot, task.Encode(slot),
			asynq.TaskID(slot.ExecutionID()),
			asynq.Queue(asynqQueue),
			asynq.MaxRetry(slot.AsynqMaxRetry()),
			asynq.Timeout(30*time.Second),
			asynq.Retention(5*time.Minute),
		)
	}
	return tasks
}

// perItem divides CPU seconds by a count.
func perItem(seconds float64, n int) time.Duration {
	return time.Duration(seconds / float64(n) * float64(time.Second))
}

// runClientBaseline enqueues n tasks with asynq.Client from 16 goroutines and
// returns the tasks enqueued per second and the CPU time of redis-server per
// task.
func runClientBaseline(ctx context.Context, e *env, n int) (float64, time.Duration, error) {
	if err := clearAsynq(ctx, e); err != nil {
		return 0, 0, err
	}
	redisBefore, err := cpuSeconds(e.redis.PID())
	if err != nil {
		return 0, 0, err
	}
	tasks := slotTasks(n)
	client := asynq.NewClientFromRedisClient(e.rdb)
	var next atomic.Int64
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	for w := 0; w < 16; w++ {
		g.Go(func() error {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return nil
				}
				if _, err := client.EnqueueContext(gctx, tasks[i]); err != nil {
					return err
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return 0, 0, err
	}
	rate := float64(n) / time.Since(start).Seconds()
	redisAfter, err := cpuSeconds(e.redis.PID())
	if err != nil {
		return 0, 0, err
	}
	return rate, perItem(redisAfter-redisBefore, n), nil
}

// runSchedulerBaseline registers n periodic tasks "@every 1s" with asynq's
// own Scheduler and returns the tasks it enqueued per second over a 5s
// window after a 2s warm-up. It cannot enqueue more than n per second, so a
// result near n means it kept up and n was too small to find its limit.
func runSchedulerBaseline(ctx context.Context, e *env, n int) (float64, error) {
	if err := clearAsynq(ctx, e); err != nil {
		return 0, err
	}
	var enqueued atomic.Int64
	s := asynq.NewSchedulerFromRedisClient(e.rdb, &asynq.SchedulerOpts{
		LogLevel: asynq.FatalLevel,
		PostEnqueueFunc: func(_ *asynq.TaskInfo, err error) {
			if err == nil {
				enqueued.Add(1)
			}
		},
	})
	payload := task.Encode(task.Slot{SlotRef: store.SlotRef{ScheduleID: "01BENCHPERIODIC0000000000", Slot: time.Now(), Generation: 1}})
	for i := 0; i < n; i++ {
		if _, err := s.Register("@every 1s", asynq.NewTask(task.TypeSlot, payload, asynq.Queue(asynqQueue))); err != nil {
			return 0, err
		}
	}
	if err := s.Start(); err != nil {
		return 0, err
	}
	defer s.Shutdown()

	if !sleepCtx(ctx, 2*time.Second) {
		return 0, ctx.Err()
	}
	before, start := enqueued.Load(), time.Now()
	if !sleepCtx(ctx, 5*time.Second) {
		return 0, ctx.Err()
	}
	return float64(enqueued.Load()-before) / time.Since(start).Seconds(), nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// burstScenario is "dispatch burst": n schedules due at once, workers off,
// against the two asynq baselines.
func burstScenario(ctx context.Context, e *env, n int) ([]figure, error) {
	if err := e.reset(ctx); err != nil {
		return nil, err
	}
	if _, err := createSchedules(ctx, e.store, n, time.Hour); err != nil {
		return nil, err
	}
	b, err := runBurst(ctx, e, n)
	if err != nil {
		return nil, fmt.Errorf("burst: %w", err)
	}
	clientRate, clientRedisCPU, err := runClientBaseline(ctx, e, n)
	if err != nil {
		return nil, fmt.Errorf("asynq.Client baseline: %w", err)
	}
	// Twice the burst's count of periodic tasks offers asynq's Scheduler more
	// than it enqueues here, so the figure is its limit, not the offer.
	schedRate, err := runSchedulerBaseline(ctx, e, 2*n)
	if err != nil {
		return nil, fmt.Errorf("asynq.Scheduler baseline: %w", err)
	}
	if err := clearAsynq(ctx, e); err != nil {
		return nil, err
	}

	name := fmt.Sprintf("dispatch burst %dk", n/1000)
	atLeast := func(r float64) func(float64, float64) bool {
		return func(_, ratio float64) bool { return ratio >= r }
	}
	return []figure{
		{scenario: name, name: "slots enqueued/s vs asynq.Client", unit: "/s", value: b.rate,
			baseline: "A asynq.Client.Enqueue, 16 goroutines", baselineValue: clientRate, target: "≥ 1.0×", met: atLeast(1.0)},
		{scenario: name, name: "slots enqueued/s vs asynq.Scheduler", unit: "/s", value: b.rate,
			baseline: fmt.Sprintf("B asynq.Scheduler, %d entries @every 1s", 2*n), baselineValue: schedRate, target: "≥ 2×", met: atLeast(2.0)},
		{scenario: name, name: "redis-server CPU per slot vs per asynq.Client task", unit: "µs", value: us(b.redisCPU),
			baseline: "A", baselineValue: us(clientRedisCPU)},
		{scenario: name, name: "scheduler CPU per slot", unit: "µs", value: us(b.schedulerCPU)},
		{scenario: name, name: "lateness p50 (slot to enqueue)", unit: "ms", value: ms(b.p50)},
		{scenario: name, name: "lateness p99 (slot to enqueue)", unit: "ms", value: ms(b.p99)},
	}, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
