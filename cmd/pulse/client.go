package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/pulse-sched/pulse/proto/protocolpb"
)

// clientFlags are the settings of every schedule command.
type clientFlags struct {
	Addr    string        `name:"addr" env:"PULSE_ADDR" default:"127.0.0.1:7400" help:"Address of the Pulse gRPC API."`
	Token   string        `name:"token" env:"PULSE_TOKEN" help:"Token of the plugin (or admin) to act as. Prefer the environment variable: a flag shows in the process list."`
	Timeout time.Duration `name:"timeout" env:"PULSE_TIMEOUT" default:"10s" help:"Deadline of the call."`
	Output  string        `name:"output" short:"o" enum:"human,json" default:"human" help:"Output format: human or json."`
}

type scheduleCmd struct {
	clientFlags `embed:""`

	Create createCmd `cmd:"" help:"Create a schedule and print its ID."`
	Get    getCmd    `cmd:"" help:"Print a schedule."`
	Pause  pauseCmd  `cmd:"" help:"Pause a schedule. Pausing a paused schedule succeeds."`
	Resume resumeCmd `cmd:"" help:"Resume a paused schedule at its next grid slot. Resuming an active schedule succeeds."`
	Delete deleteCmd `cmd:"" help:"Delete a schedule; it stays readable with state deleted until its retention ends."`
}

type createCmd struct {
	Handler        string            `name:"handler" required:"" help:"Handler to run at every slot, such as pulse.log."`
	Interval       string            `name:"interval" required:"" help:"Time between slots: whole seconds (60) or a duration (1m, 90s)."`
	Payload        string            `name:"payload" xor:"payload" help:"Payload as a string."`
	PayloadFile    string            `name:"payload-file" xor:"payload" type:"path" help:"Read the payload from a file; - reads standard input."`
	Metadata       map[string]string `name:"metadata" short:"m" mapsep:"none" placeholder:"KEY=VALUE" help:"Metadata pair; repeat the flag for more."`
	RunImmediately bool              `name:"run-immediately" help:"Run the first slot now instead of one interval from now."`
	ATSCode        string            `name:"ats-code" help:"Plugin that owns the schedule; required with an admin token."`
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

// call dials the API and runs fn with the call's deadline.
func (f *clientFlags) call(ctx context.Context, fn func(ctx context.Context, c protocolpb.ScheduleServiceClient) error) error {
	if f.Token == "" {
		return usageError("no token: set PULSE_TOKEN (or --token) to the token of your plugin")
	}
	conn, err := grpc.NewClient(f.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return usageError("invalid --addr %q: %v", f.Addr, err)
	}
	defer conn.Close()

	ctx, cancel := context.WithTimeout(ctx, f.Timeout)
	defer cancel()
	err = fn(ctx, protocolpb.NewScheduleServiceClient(conn))
	if s, ok := status.FromError(err); ok && err != nil {
		return &exitError{code: exitUnavailable, message: fmt.Sprintf("call to %s failed: %s: %s", f.Addr, s.Code(), s.Message())}
	}
	return err
}

// rejected returns the error of an in-band failure.
func rejected(code, message string) error {
	return &exitError{code: exitRejected, message: fmt.Sprintf("%s: %s", code, message)}
}

func (c *createCmd) Run(ctx context.Context, g *globals, f *scheduleCmd) error {
	seconds, err := parseInterval(c.Interval)
	if err != nil {
		return usageError("%v", err)
	}
	payload, err := c.readPayload(g.stdin)
	if err != nil {
		return usageError("%v", err)
	}

	req := &protocolpb.CreateScheduleRequest{
		AuthToken:       f.Token,
		HandlerName:     c.Handler,
		IntervalSeconds: seconds,
		Payload:         payload,
		Metadata:        c.Metadata,
		AtsCode:         c.ATSCode,
		RunImmediately:  c.RunImmediately,
	}
	return f.call(ctx, func(ctx context.Context, client protocolpb.ScheduleServiceClient) error {
		resp, err := client.CreateSchedule(ctx, req)
		if err != nil {
			return err
		}
		if !resp.GetSuccess() {
			return rejected(resp.GetErrorCode(), resp.GetError())
		}
		if f.Output == "json" {
			return writeJSON(g.stdout, map[string]string{"schedule_id": resp.GetScheduleId()})
		}
		fmt.Fprintln(g.stdout, resp.GetScheduleId())
		return nil
	})
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

// parseInterval reads whole seconds ("60") or a Go duration ("1m30s").
func parseInterval(s string) (int32, error) {
	if n, err := strconv.ParseInt(s, 10, 32); err == nil {
		return int32(n), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("--interval %q is invalid: give whole seconds (60) or a duration (1m, 90s)", s)
	}
	if d%time.Second != 0 {
		return 0, fmt.Errorf("--interval %q is invalid: it must be a whole number of seconds", s)
	}
	if d/time.Second > 1<<31-1 {
		return 0, fmt.Errorf("--interval %q is invalid: it is too long", s)
	}
	return int32(d / time.Second), nil
}

func (c *getCmd) Run(ctx context.Context, g *globals, f *scheduleCmd) error {
	return f.call(ctx, func(ctx context.Context, client protocolpb.ScheduleServiceClient) error {
		resp, err := client.GetSchedule(ctx, &protocolpb.GetScheduleRequest{AuthToken: f.Token, ScheduleId: c.ID})
		if err != nil {
			return err
		}
		if !resp.GetSuccess() {
			return rejected(resp.GetErrorCode(), resp.GetError())
		}
		if f.Output == "json" {
			b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(resp.GetJob())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(g.stdout, string(b))
			return err
		}
		return writeJob(g.stdout, resp.GetJob())
	})
}

func writeJob(w io.Writer, job *protocolpb.ScheduledJob) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	rows := [][2]string{
		{"id", job.GetId()},
		{"state", job.GetState()},
		{"ats_code", job.GetAtsCode()},
		{"handler_name", job.GetHandlerName()},
		{"interval_seconds", strconv.Itoa(int(job.GetIntervalSeconds()))},
		{"next_run_at", orDash(job.GetNextRunAt())},
		{"last_run_at", orDash(job.GetLastRunAt())},
		{"last_execution_id", orDash(job.GetLastExecutionId())},
		{"source_url", orDash(job.GetSourceUrl())},
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

// stateChange is the common shape of pause, resume and delete.
type stateChange func(ctx context.Context, client protocolpb.ScheduleServiceClient, token, id string) (success bool, code, message string, err error)

// runStateChange runs one state change; verb is what the human output says
// happened and state the schedule's state afterwards.
func runStateChange(ctx context.Context, g *globals, f *scheduleCmd, id, verb, state string, change stateChange) error {
	return f.call(ctx, func(ctx context.Context, client protocolpb.ScheduleServiceClient) error {
		ok, code, message, err := change(ctx, client, f.Token, id)
		if err != nil {
			return err
		}
		if !ok {
			return rejected(code, message)
		}
		if f.Output == "json" {
			return writeJSON(g.stdout, map[string]string{"schedule_id": id, "state": state})
		}
		fmt.Fprintf(g.stdout, "schedule %s %s\n", id, verb)
		return nil
	})
}

func (c *pauseCmd) Run(ctx context.Context, g *globals, f *scheduleCmd) error {
	return runStateChange(ctx, g, f, c.ID, "paused", "paused", func(ctx context.Context, client protocolpb.ScheduleServiceClient, token, id string) (bool, string, string, error) {
		resp, err := client.PauseSchedule(ctx, &protocolpb.PauseScheduleRequest{AuthToken: token, ScheduleId: id})
		return resp.GetSuccess(), resp.GetErrorCode(), resp.GetError(), err
	})
}

func (c *resumeCmd) Run(ctx context.Context, g *globals, f *scheduleCmd) error {
	return runStateChange(ctx, g, f, c.ID, "resumed", "active", func(ctx context.Context, client protocolpb.ScheduleServiceClient, token, id string) (bool, string, string, error) {
		resp, err := client.ResumeSchedule(ctx, &protocolpb.ResumeScheduleRequest{AuthToken: token, ScheduleId: id})
		return resp.GetSuccess(), resp.GetErrorCode(), resp.GetError(), err
	})
}

func (c *deleteCmd) Run(ctx context.Context, g *globals, f *scheduleCmd) error {
	return runStateChange(ctx, g, f, c.ID, "deleted", "deleted", func(ctx context.Context, client protocolpb.ScheduleServiceClient, token, id string) (bool, string, string, error) {
		resp, err := client.DeleteSchedule(ctx, &protocolpb.DeleteScheduleRequest{AuthToken: token, ScheduleId: id})
		return resp.GetSuccess(), resp.GetErrorCode(), resp.GetError(), err
	})
}
