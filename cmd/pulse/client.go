package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/pulse-sched/pulse/client"
	"github.com/pulse-sched/pulse/proto/protocolpb"
)

// clientFlags are the settings of every schedule command.
type clientFlags struct {
	Addr    string        `name:"addr" env:"PULSE_ADDR" default:"127.0.0.1:7400" help:"Address of the Pulse gRPC API: host:port, or grpcs://host:port for TLS."`
	Token   string        `name:"token" env:"PULSE_TOKEN" help:"Token of the plugin (or admin) to act as. Prefer the environment variable: a flag shows in the process list."`
	Timeout time.Duration `name:"timeout" env:"PULSE_TIMEOUT" default:"10s" help:"Deadline of the call."`
	Output  string        `name:"output" short:"o" enum:"human,json" default:"human" help:"Output format: human or json."`
}

type scheduleCmd struct {
	clientFlags `embed:""`

	Create createCmd `cmd:"" help:"Create a schedule and print its ID."`
	Get    getCmd    `cmd:"" help:"Print a schedule with the outcome of its latest execution."`
	Pause  pauseCmd  `cmd:"" help:"Pause a schedule. Pausing a paused schedule succeeds."`
	Resume resumeCmd `cmd:"" help:"Resume a paused schedule at its next grid slot. Resuming an active schedule succeeds."`
	Delete deleteCmd `cmd:"" help:"Delete a schedule; it stays readable with state deleted until its retention ends."`
}

// Help is the detailed help of "pulse schedule --help".
func (scheduleCmd) Help() string {
	return `Exit codes: 0 success; 1 Pulse rejected the request (the message starts with its error code, such as NOT_FOUND or INVALID_ARGUMENT); 2 invalid command line; 3 Pulse or Redis could not be reached in time.`
}

type createCmd struct {
	Handler            string            `name:"handler" required:"" help:"Handler to run at every slot: a built-in such as pulse.log, or one that the plugin serves."`
	Interval           string            `name:"interval" required:"" help:"Time between slots: whole seconds (60) or a duration (1m, 90s)."`
	Payload            string            `name:"payload" xor:"payload" help:"Payload as a string."`
	PayloadFile        string            `name:"payload-file" xor:"payload" type:"path" help:"Read the payload from a file; - reads standard input."`
	Metadata           map[string]string `name:"metadata" short:"m" mapsep:"none" placeholder:"KEY=VALUE" help:"Metadata pair; repeat the flag for more."`
	RunImmediately     bool              `name:"run-immediately" help:"Run the first slot now instead of one interval from now."`
	ATSCode            string            `name:"ats-code" help:"Plugin that owns the schedule; required with an admin token."`
	HandlerTimeout     string            `name:"handler-timeout" placeholder:"DURATION" help:"Deadline of one attempt of the handler: whole seconds or a duration (default: the API's, 30s unless configured). Named so because --timeout is the deadline of this call."`
	MaxRetries         *int              `name:"max-retries" placeholder:"N" help:"Retries after a failed attempt, 0 to 25 (default: the API's, 3 unless configured)."`
	PauseAfterFailures int               `name:"pause-after-failures" placeholder:"N" help:"Pause the schedule after N consecutive failed executions; 0 never."`
	MisfirePolicy      string            `name:"misfire-policy" placeholder:"POLICY" help:"Slots missed while no scheduler ran: run_latest (default), skip or run_all."`
	MisfireWindow      string            `name:"misfire-window" placeholder:"DURATION" help:"With --misfire-policy run_all: how far back missed slots still run (default 1h, at most 24h)."`
	OverlapPolicy      string            `name:"overlap-policy" placeholder:"POLICY" help:"A slot whose previous execution still runs: skip (default), allow or buffer_one."`
	StartAt            string            `name:"start-at" placeholder:"TIME" help:"Anchor of the grid and first slot, RFC 3339 such as 2026-01-02T15:04:05Z; at most one year ahead."`
}

type getCmd struct {
	ID string `arg:"" name:"schedule-id" help:"ID of the schedule."`
}

type pauseCmd struct {
	ID string `arg:"" name:"schedule-id" help:"ID of the schedule."`
}

type resumeCmd struct {
	ID string `arg:"" name:"schedule-id" help:"ID of the schedule."`
}

type deleteCmd struct {
	ID string `arg:"" name:"schedule-id" help:"ID of the schedule."`
}

// call connects to the API and runs fn with the call's deadline. It turns
// a rejection into exit code 1 and a failure to reach Pulse into 3.
func (f *clientFlags) call(ctx context.Context, fn func(ctx context.Context, c *client.Client) error) error {
	if f.Token == "" {
		return usageError("no token: set PULSE_TOKEN (or --token) to the token of your plugin")
	}
	c, err := client.New(f.Addr, f.Token, client.WithCallTimeout(f.Timeout))
	if err != nil {
		return usageError("invalid --addr: %v", err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(ctx, f.Timeout)
	defer cancel()
	err = fn(ctx, c)
	var rejected *client.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &rejected):
		return &exitError{code: exitRejected, message: rejected.Error()}
	}
	if s, ok := status.FromError(err); ok {
		return &exitError{code: exitUnavailable, message: fmt.Sprintf("call to %s failed: %s: %s", f.Addr, s.Code(), s.Message())}
	}
	return err
}

func (c *createCmd) Run(ctx context.Context, g *globals, f *scheduleCmd) error {
	spec, err := c.spec(g.stdin)
	if err != nil {
		return usageError("%v", err)
	}
	return f.call(ctx, func(ctx context.Context, cl *client.Client) error {
		id, err := cl.Create(ctx, spec)
		if err != nil {
			return err
		}
		if f.Output == "json" {
			return writeJSON(g.stdout, map[string]string{"schedule_id": id})
		}
		fmt.Fprintln(g.stdout, id)
		return nil
	})
}

// spec checks the flags that the command line can check and builds the
// schedule to create; the API checks the rest.
func (c *createCmd) spec(stdin io.Reader) (client.ScheduleSpec, error) {
	spec := client.ScheduleSpec{
		Handler:            c.Handler,
		Metadata:           c.Metadata,
		ATSCode:            c.ATSCode,
		RunImmediately:     c.RunImmediately,
		MaxRetries:         c.MaxRetries,
		PauseAfterFailures: c.PauseAfterFailures,
		MisfirePolicy:      c.MisfirePolicy,
		OverlapPolicy:      c.OverlapPolicy,
	}
	var err error
	if spec.Interval, err = parseSeconds("--interval", c.Interval); err != nil {
		return spec, err
	}
	if c.HandlerTimeout != "" {
		if spec.Timeout, err = parseSeconds("--handler-timeout", c.HandlerTimeout); err != nil {
			return spec, err
		}
	}
	if c.MisfireWindow != "" {
		if spec.MisfireWindow, err = parseSeconds("--misfire-window", c.MisfireWindow); err != nil {
			return spec, err
		}
	}
	if c.StartAt != "" {
		if spec.StartAt, err = time.Parse(time.RFC3339Nano, c.StartAt); err != nil {
			return spec, fmt.Errorf("--start-at %q is invalid: give an RFC 3339 time such as 2026-01-02T15:04:05Z", c.StartAt)
		}
	}
	if spec.Payload, err = c.readPayload(stdin); err != nil {
		return spec, err
	}
	return spec, nil
}

func (c *createCmd) readPayload(stdin io.Reader) ([]byte, error) {
	switch c.PayloadFile {
	case "":
		return []byte(c.Payload), nil
	case "-":
		b, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("read payload from standard input: %w", err)
		}
		return b, nil
	default:
		b, err := os.ReadFile(c.PayloadFile)
		if err != nil {
			return nil, fmt.Errorf("read payload file: %w", err)
		}
		return b, nil
	}
}

// parseSeconds reads whole seconds ("60") or a Go duration ("1m30s") of the
// flag name; the result is a positive whole number of seconds.
func parseSeconds(name, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if n, convErr := strconv.ParseInt(s, 10, 32); convErr == nil {
		d, err = time.Duration(n)*time.Second, nil
	}
	switch {
	case err != nil:
		return 0, fmt.Errorf("%s %q is invalid: give whole seconds (60) or a duration (1m, 90s)", name, s)
	case d <= 0:
		return 0, fmt.Errorf("%s %q is invalid: it must be positive", name, s)
	case d%time.Second != 0:
		return 0, fmt.Errorf("%s %q is invalid: it must be a whole number of seconds", name, s)
	case d/time.Second > 1<<31-1:
		return 0, fmt.Errorf("%s %q is invalid: it is too long", name, s)
	}
	return d, nil
}

func (c *getCmd) Run(ctx context.Context, g *globals, f *scheduleCmd) error {
	return f.call(ctx, func(ctx context.Context, cl *client.Client) error {
		job, err := cl.Get(ctx, c.ID)
		if err != nil {
			return err
		}
		if f.Output == "json" {
			b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(job)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(g.stdout, string(b))
			return err
		}
		return writeJob(g.stdout, job)
	})
}

func writeJob(w io.Writer, job *protocolpb.ScheduledJob) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	misfire := job.GetMisfirePolicy()
	if job.GetMisfireWindowSeconds() > 0 {
		misfire += fmt.Sprintf(" (window %ds)", job.GetMisfireWindowSeconds())
	}
	rows := [][2]string{
		{"id", job.GetId()},
		{"state", job.GetState()},
		{"paused_reason", orDash(job.GetPausedReason())},
		{"ats_code", job.GetAtsCode()},
		{"handler_name", job.GetHandlerName()},
		{"source_url", orDash(job.GetSourceUrl())},
		{"interval_seconds", strconv.Itoa(int(job.GetIntervalSeconds()))},
		{"next_run_at", orDash(job.GetNextRunAt())},
		{"last_run_at", orDash(job.GetLastRunAt())},
		{"last_execution_id", orDash(job.GetLastExecutionId())},
		{"last_status", orDash(job.GetLastStatus())},
		{"last_error", orDash(job.GetLastError())},
		{"consecutive_failures", strconv.FormatInt(job.GetConsecutiveFailures(), 10)},
		{"total_runs", strconv.FormatInt(job.GetTotalRuns(), 10)},
		{"skipped_slots", strconv.FormatInt(job.GetSkippedSlots(), 10)},
		{"timeout_seconds", strconv.Itoa(int(job.GetTimeoutSeconds()))},
		{"max_retries", strconv.Itoa(int(job.GetMaxRetries()))},
		{"pause_after_failures", pauseAfter(job.GetPauseAfterFailures())},
		{"misfire_policy", misfire},
		{"overlap_policy", job.GetOverlapPolicy()},
		{"payload", fmt.Sprintf("%d bytes", len(job.GetPayload()))},
		{"metadata", job.GetMetadata()},
		{"created_at", job.GetCreatedAt()},
		{"updated_at", job.GetUpdatedAt()},
	}
	for _, row := range rows {
		fmt.Fprintf(tw, "%s:\t%s\n", row[0], row[1])
	}
	return tw.Flush()
}

func pauseAfter(n int32) string {
	if n == 0 {
		return "never"
	}
	return strconv.Itoa(int(n))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	return enc.Encode(v)
}

// runStateChange runs one state change. verb is the past tense that the
// human output prints, and state is the schedule's state afterwards.
func runStateChange(ctx context.Context, g *globals, f *scheduleCmd, id, verb, state string, change func(*client.Client, context.Context, string) error) error {
	return f.call(ctx, func(ctx context.Context, cl *client.Client) error {
		if err := change(cl, ctx, id); err != nil {
			return err
		}
		if f.Output == "json" {
			return writeJSON(g.stdout, map[string]string{"schedule_id": id, "state": state})
		}
		fmt.Fprintf(g.stdout, "schedule %s %s\n", id, verb)
		return nil
	})
}

func (c *pauseCmd) Run(ctx context.Context, g *globals, f *scheduleCmd) error {
	return runStateChange(ctx, g, f, c.ID, "paused", "paused", (*client.Client).Pause)
}

func (c *resumeCmd) Run(ctx context.Context, g *globals, f *scheduleCmd) error {
	return runStateChange(ctx, g, f, c.ID, "resumed", "active", (*client.Client).Resume)
}

func (c *deleteCmd) Run(ctx context.Context, g *globals, f *scheduleCmd) error {
	return runStateChange(ctx, g, f, c.ID, "deleted", "deleted", (*client.Client).Delete)
}
