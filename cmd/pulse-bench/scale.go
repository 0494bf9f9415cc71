package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
)

// scaleInterval is the interval of the scale scenario's schedules: with due
// times spread evenly, 1% of them are due every second.
const scaleInterval = 100 * time.Second

// scaleWindow is how long the scale scenario measures, after scaleWarmUp.
const (
	scaleWarmUp  = 2 * time.Second
	scaleWindow  = 10 * time.Second
	scaleBurst   = 10000
	scaleGrace   = time.Second
	scaleLeadMin = time.Second
)

// scaleScenario is "dispatch as N grows" for one schedule count. Its schedules
// are created once, in the first run, which also measures Redis memory per
// schedule.
type scaleScenario struct {
	n         int
	populated bool
	// bursts holds, by run, the burst rate of the smallest schedule count,
	// the baseline of every larger count.
	bursts map[int]float64
	first  bool
}

func (s *scaleScenario) name() string { return fmt.Sprintf("dispatch at N=%s", count(s.n)) }

func count(n int) string {
	switch {
	case n >= 1000000 && n%1000000 == 0:
		return fmt.Sprintf("%dM", n/1000000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	default:
		return fmt.Sprint(n)
	}
}

func (s *scaleScenario) run(ctx context.Context, e *env, run int) ([]figure, error) {
	var figures []figure
	if !s.populated {
		mem, err := populate(ctx, e, s.n)
		if err != nil {
			return nil, fmt.Errorf("memory: %w", err)
		}
		figures = append(figures, mem...)
		s.populated = true
	}

	w, err := s.window(ctx, e)
	if err != nil {
		return nil, err
	}
	rate, err := runBurst(ctx, e, min(scaleBurst, s.n))
	if err != nil {
		return nil, fmt.Errorf("burst: %w", err)
	}
	if s.first {
		s.bursts[run] = rate.rate
	}

	name := s.name()
	due := float64(s.n) / scaleInterval.Seconds()
	figures = append(figures,
		figure{scenario: name, name: "slots due per second (offered)", unit: "/s", value: due},
		figure{scenario: name, name: "slots enqueued / slots due in the window", unit: "", value: w.dispatched / (due * scaleWindow.Seconds())},
		figure{scenario: name, name: "lateness p50 (slot to enqueue, from asynq)", unit: "ms", value: ms(w.p50)},
		s.p99Figure(name, w.p99, due),
		figure{scenario: name, name: "lateness p99 (histogram estimate)", unit: "ms", value: w.histogramP99 * 1000},
		figure{scenario: name, name: "scheduler CPU (one core = 100)", unit: "%", value: w.cpuPercent},
		figure{scenario: name, name: "scheduler peak RSS", unit: "MB", value: w.peakRSSMB,
			target: "≤ 100 MB at 1M", met: func(v, _ float64) bool { return s.n < 1000000 || v <= 100 }},
	)
	burst := figure{scenario: name, name: fmt.Sprintf("burst of %s: slots enqueued/s", count(min(scaleBurst, s.n))), unit: "/s", value: rate.rate}
	if !s.first {
		if base, ok := s.bursts[run]; ok {
			burst.baseline = "same burst at the smallest N"
			burst.baselineValue = base
			burst.target = "≥ 0.8×"
			burst.met = func(_, ratio float64) bool { return ratio >= 0.8 }
		}
	}
	return append(figures, burst), nil
}

// p99Figure attaches the targets: p99 ≤ 50 ms at 1k due/s and ≤ 300 ms at
// 10k due/s.
func (s *scaleScenario) p99Figure(name string, p99 time.Duration, due float64) figure {
	f := figure{scenario: name, name: "lateness p99 (slot to enqueue, from asynq)", unit: "ms", value: ms(p99)}
	switch {
	case due >= 10000:
		f.target = "≤ 300 ms"
		f.met = func(v, _ float64) bool { return v <= 300 }
	case due >= 1000:
		f.target = "≤ 50 ms"
		f.met = func(v, _ float64) bool { return v <= 50 }
	}
	return f
}

// windowResult holds the figures of the scale scenario's window.
type windowResult struct {
	dispatched   float64
	p50, p99     time.Duration
	histogramP99 float64
	cpuPercent   float64
	peakRSSMB    float64
}

// window spreads the due times of every schedule evenly over one interval
// and measures a scheduler process for scaleWindow.
func (s *scaleScenario) window(ctx context.Context, e *env) (windowResult, error) {
	if err := clearAsynq(ctx, e); err != nil {
		return windowResult{}, err
	}
	members, err := dueMembers(ctx, e)
	if err != nil {
		return windowResult{}, err
	}
	now, err := e.redisTime(ctx)
	if err != nil {
		return windowResult{}, err
	}
	if err := setDue(ctx, e, members, func(int) time.Time { return now.Add(time.Hour) }); err != nil {
		return windowResult{}, err
	}
	sched, err := e.startPulse(ctx, "scheduler")
	if err != nil {
		return windowResult{}, err
	}
	defer sched.stop()

	// Rewriting a million scores takes a few seconds; the first slots lie
	// beyond that.
	now, err = e.redisTime(ctx)
	if err != nil {
		return windowResult{}, err
	}
	start := now.Add(scaleLeadMin + time.Duration(s.n)*4*time.Microsecond).Truncate(time.Millisecond)
	n := s.n
	if err := setDue(ctx, e, members, func(i int) time.Time {
		return start.Add(time.Duration(int64(i) * int64(scaleInterval) / int64(n)))
	}); err != nil {
		return windowResult{}, err
	}

	from, to := start.Add(scaleWarmUp), start.Add(scaleWarmUp+scaleWindow)
	if !sleepUntil(ctx, from) {
		return windowResult{}, ctx.Err()
	}
	cpuBefore, err := cpuSeconds(sched.cmd.Process.Pid)
	if err != nil {
		return windowResult{}, err
	}
	histBefore, err := sched.histogram("pulse_scheduler_dispatch_lateness_seconds")
	if err != nil {
		return windowResult{}, err
	}
	wallBefore := time.Now()
	if !sleepUntil(ctx, to) {
		return windowResult{}, ctx.Err()
	}
	cpuAfter, err := cpuSeconds(sched.cmd.Process.Pid)
	if err != nil {
		return windowResult{}, err
	}
	histAfter, err := sched.histogram("pulse_scheduler_dispatch_lateness_seconds")
	if err != nil {
		return windowResult{}, err
	}
	wall := time.Since(wallBefore)
	_, peakKB, err := memoryKB(sched.cmd.Process.Pid)
	if err != nil {
		return windowResult{}, err
	}
	// Slots due at the end of the window may still be on their way.
	if !sleepUntil(ctx, to.Add(scaleGrace)) {
		return windowResult{}, ctx.Err()
	}
	sched.stop()

	tasks, err := pendingTasks(ctx, e)
	if err != nil {
		return windowResult{}, err
	}
	var late []time.Duration
	for _, t := range tasks {
		if !t.slot.Before(from) && t.slot.Before(to) {
			late = append(late, t.lateness())
		}
	}
	if p99 := percentile(late, 0.99); p99 > time.Second {
		// Worth a look: print what the scheduler logged at warn level.
		out, _ := os.ReadFile(sched.log)
		e.logger.Warn("scheduler was late by more than a second in the window", "n", s.n, "p99", p99.String(),
			"scheduler_log", tail(string(out), 20))
	}
	return windowResult{
		dispatched:   float64(len(late)),
		p50:          percentile(late, 0.50),
		p99:          percentile(late, 0.99),
		histogramP99: histAfter.sub(histBefore).quantile(0.99),
		cpuPercent:   (cpuAfter - cpuBefore) / wall.Seconds() * 100,
		peakRSSMB:    float64(peakKB) / 1024,
	}, nil
}

// tail returns the last n lines of text.
func tail(text string, n int) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// sleepUntil sleeps until t by the local clock, which on this one machine is
// Redis's clock too.
func sleepUntil(ctx context.Context, t time.Time) bool {
	return sleepCtx(ctx, time.Until(t))
}

// memoryMinN is the smallest schedule count whose memory is reported; below
// it, hash table growth steps and allocator pages weigh on the figure.
const memoryMinN = 100000

// populate empties Redis and creates n schedules through the store. From
// memoryMinN schedules on it also stores n records as plain strings first,
// and returns the used_memory growth per record of each.
func populate(ctx context.Context, e *env, n int) ([]figure, error) {
	if err := e.reset(ctx); err != nil {
		return nil, err
	}
	if n < memoryMinN {
		_, err := createSchedules(ctx, e.store, n, scaleInterval)
		return nil, err
	}
	before, err := e.usedMemory(ctx)
	if err != nil {
		return nil, err
	}
	if err := storePlainStrings(ctx, e, n); err != nil {
		return nil, err
	}
	after, err := e.usedMemory(ctx)
	if err != nil {
		return nil, err
	}
	plain := float64(after-before) / float64(n)

	if err := e.reset(ctx); err != nil {
		return nil, err
	}
	before, err = e.usedMemory(ctx)
	if err != nil {
		return nil, err
	}
	started := time.Now()
	ids, err := createSchedules(ctx, e.store, n, scaleInterval)
	if err != nil {
		return nil, err
	}
	e.logger.Info("schedules created", "count", n, "took", time.Since(started).Round(time.Millisecond).String(),
		"per_second", int(float64(n)/time.Since(started).Seconds()))
	after, err = e.usedMemory(ctx)
	if err != nil {
		return nil, err
	}
	perSchedule := float64(after-before) / float64(n)

	keys := e.store.Keys()
	id := ids[0]
	encoding, err := e.rdb.ObjectEncoding(ctx, keys.ScheduleKey(keys.PartitionOf(id), id)).Result()
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("memory at N=%s", count(n))
	return []figure{
		{scenario: name, name: fmt.Sprintf("Redis bytes per schedule (hash encoding %s)", encoding), unit: "B", value: perSchedule,
			baseline: "the record as one plain string", baselineValue: plain,
			target: "≤ 900 B", met: func(v, _ float64) bool { return v <= 900 }},
	}, nil
}

// storePlainStrings stores n records as plain strings: the schedule hash's
// fields and the spec in one value, under a key as long as a schedule key.
func storePlainStrings(ctx context.Context, e *env, n int) error {
	keys := e.store.Keys()
	now := time.Now().UnixMilli()
	payload, metadata := string(benchPayload()), benchMetadataJSON()
	for start := 0; start < n; start += 5000 {
		_, err := e.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := start; i < min(start+5000, n); i++ {
				id := ulid.Make().String()
				var b strings.Builder
				fmt.Fprintf(&b, "ats=%s;st=active;iv=%d;an=%d;nx=%d;gen=1;ca=%d;ua=%d;h=%s;src=%s;md=%s;",
					benchOwner, scaleInterval.Milliseconds(), now, now+scaleInterval.Milliseconds(), now, now,
					benchHandler, benchSource, metadata)
				b.WriteString(payload)
				p.Set(ctx, keys.ScheduleKey(keys.PartitionOf(id), id), b.String(), 0)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}
