// Command pulse-bench measures Pulse's dispatch, end-to-end, API and memory
// figures against baselines measured in the same run on the same Redis.
//
// It starts its own redis-server on a free loopback port and runs the pulse
// binary given by --pulse as separate scheduler, worker and API processes.
// It prints one Markdown table with the minimum, median and maximum of each
// figure over --runs runs and the ratio to its baseline, below the command
// that produced it. Every connection goes to 127.0.0.1.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

// scenarioNames lists every scenario in the order they run.
var scenarioNames = []string{"burst", "scale", "e2e", "api"}

type options struct {
	pulse     string
	runs      int
	scenarios []string
	burstN    int
	scaleNs   []int
	out       string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == rawWorkerCommand {
		if err := runRawWorker(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "pulse-bench %s: %v\n", rawWorkerCommand, err)
			os.Exit(1)
		}
		return
	}
	var o options
	var scenarios, scaleNs string
	flag.StringVar(&o.pulse, "pulse", "bin/pulse", "path of the pulse binary")
	flag.IntVar(&o.runs, "runs", 3, "runs of each scenario")
	flag.StringVar(&scenarios, "scenarios", strings.Join(scenarioNames, ","), "scenarios to run: "+strings.Join(scenarioNames, ", "))
	flag.IntVar(&o.burstN, "burst", 20000, "schedules in the dispatch burst")
	flag.StringVar(&scaleNs, "scale", "10000,100000,1000000", "schedule counts of the scale scenario")
	flag.StringVar(&o.out, "out", "", "also write the report to this file")
	flag.Parse()

	for _, s := range strings.Split(scenarios, ",") {
		if !slices.Contains(scenarioNames, s) {
			fmt.Fprintf(os.Stderr, "pulse-bench: unknown scenario %q; expected some of %s\n", s, strings.Join(scenarioNames, ", "))
			os.Exit(2)
		}
		o.scenarios = append(o.scenarios, s)
	}
	for _, s := range strings.Split(scaleNs, ",") {
		var n int
		if _, err := fmt.Sscan(s, &n); err != nil || n < 100 {
			fmt.Fprintf(os.Stderr, "pulse-bench: schedule count %q is invalid: it must be a number of at least 100\n", s)
			os.Exit(2)
		}
		o.scaleNs = append(o.scaleNs, n)
	}
	if o.runs < 1 {
		fmt.Fprintln(os.Stderr, "pulse-bench: --runs must be at least 1")
		os.Exit(2)
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, logger, o); err != nil {
		logger.Error("benchmark failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, logger *slog.Logger, o options) error {
	if _, err := os.Stat(o.pulse); err != nil {
		return fmt.Errorf("pulse binary: %w (build it with make build, or pass --pulse)", err)
	}
	e, err := newEnv(ctx, logger, o.pulse)
	if err != nil {
		return err
	}
	defer e.close()

	started := time.Now()
	runs := make([][]figure, o.runs)
	for _, sc := range scenarios(o) {
		for run := 1; run <= o.runs; run++ {
			logger.Info("scenario started", "scenario", sc.label, "run", run)
			t := time.Now()
			f, err := sc.run(ctx, e, run)
			if err != nil {
				return fmt.Errorf("scenario %s, run %d: %w", sc.label, run, err)
			}
			logger.Info("scenario finished", "scenario", sc.label, "run", run, "took", time.Since(t).Round(time.Millisecond).String())
			runs[run-1] = append(runs[run-1], f...)
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "Command: `%s`\n\n", strings.Join(os.Args, " "))
	fmt.Fprintf(&b, "Machine: %s; %s; %s; %d runs in %s, %s.\n\n",
		machine(), redisVersion(), goVersion(), o.runs, time.Since(started).Round(time.Second), started.UTC().Format("2006-01-02"))
	writeTable(&b, aggregate(runs))
	fmt.Print(b.String())
	if o.out != "" {
		return os.WriteFile(o.out, []byte(b.String()), 0o644)
	}
	return nil
}

// scenario is one scenario instance; run measures it once.
type scenario struct {
	label string
	run   func(ctx context.Context, e *env, run int) ([]figure, error)
}

// scenarios returns the selected scenarios in their order: each one runs
// --runs times before the next one starts, so that a scenario's schedules
// are created once.
func scenarios(o options) []scenario {
	var out []scenario
	for _, name := range o.scenarios {
		switch name {
		case "burst":
			out = append(out, scenario{label: name, run: func(ctx context.Context, e *env, _ int) ([]figure, error) {
				return burstScenario(ctx, e, o.burstN)
			}})
		case "scale":
			ns := slices.Clone(o.scaleNs)
			slices.Sort(ns)
			bursts := map[int]float64{}
			for i, n := range ns {
				s := &scaleScenario{n: n, bursts: bursts, first: i == 0}
				out = append(out, scenario{label: s.name(), run: s.run})
			}
		case "e2e":
			out = append(out, scenario{label: name, run: func(ctx context.Context, e *env, _ int) ([]figure, error) {
				return e2eScenario(ctx, e)
			}})
		case "api":
			out = append(out, scenario{label: name, run: func(ctx context.Context, e *env, _ int) ([]figure, error) {
				return apiScenario(ctx, e)
			}})
		}
	}
	return out
}

func redisVersion() string {
	out, err := exec.Command("redis-server", "--version").Output()
	if err != nil {
		return "redis-server version unknown"
	}
	fields := strings.Fields(string(out))
	for _, f := range fields {
		if v, ok := strings.CutPrefix(f, "v="); ok {
			return "Redis " + v
		}
	}
	return strings.TrimSpace(string(out))
}

func goVersion() string {
	out, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		return "Go version unknown"
	}
	return strings.TrimSpace(string(out))
}
