// Command plugin is an example Pulse plugin. It serves two handlers over the
// PluginHandler API and, once it listens, creates one schedule for each
// through the ScheduleService:
//
//   - example.greet greets the name in its payload;
//   - example.count counts the items of the JSON array in its payload, and
//     fails permanently (no retry) when the payload is not one.
//
// It deletes the schedules it created when it stops (SIGINT or SIGTERM), so
// that starting it again does not pile them up.
//
// Run it against "make run" as the README describes:
//
//	PULSE_TOKEN=... go run ./examples/plugin --listen 127.0.0.1:7600
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/pulse-sched/pulse/client"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

type config struct {
	listen    string
	pulseAddr string
	token     string
	interval  time.Duration
	logFormat string
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("plugin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.listen, "listen", "127.0.0.1:7600", "address to serve the PluginHandler API on; it must be the plugin's endpoint in Pulse")
	fs.StringVar(&c.pulseAddr, "pulse-addr", envOr("PULSE_ADDR", "127.0.0.1:7400"), "address of the Pulse API (env PULSE_ADDR)")
	fs.DurationVar(&c.interval, "interval", 5*time.Second, "interval of the schedules this plugin creates, whole seconds")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.token = os.Getenv("PULSE_TOKEN")
	if c.token == "" {
		return c, errors.New("PULSE_TOKEN is not set: give the plugin's token (make run prints one)")
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		return c, fmt.Errorf("-log-format %q is invalid: it must be text or json", c.logFormat)
	}
	return c, nil
}

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}

func run(args []string, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "plugin: %v\n", err)
		return 2
	}
	var handler slog.Handler = slog.NewTextHandler(stderr, nil)
	if cfg.logFormat == "json" {
		handler = slog.NewJSONHandler(stderr, nil)
	}
	logger := slog.New(handler)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, logger); err != nil {
		logger.Error("plugin stopped", "error", err)
		return 1
	}
	logger.Info("plugin stopped")
	return 0
}

// serve listens, creates the schedules, serves their handlers until ctx
// ends, then deletes the schedules.
func serve(ctx context.Context, cfg config, logger *slog.Logger) error {
	lis, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- client.ServeHandlers(ctx, lis, handlers(logger)) }()
	logger.Info("plugin listening", "addr", lis.Addr().String())

	pulse, err := client.New(cfg.pulseAddr, cfg.token)
	if err != nil {
		return err
	}
	defer pulse.Close()

	ids, err := createSchedules(ctx, pulse, cfg.interval, logger)
	defer deleteSchedules(pulse, ids, logger)
	if err != nil {
		return err
	}
	return <-served
}

// handlers returns the handlers that the plugin serves.
func handlers(logger *slog.Logger) map[string]client.HandlerFunc {
	return map[string]client.HandlerFunc{
		"example.greet": func(ctx context.Context, req *client.Request) error {
			logRun(logger, req, "greeting", fmt.Sprintf("hello, %s", req.Payload))
			return nil
		},
		"example.count": func(ctx context.Context, req *client.Request) error {
			var items []json.RawMessage
			if err := json.Unmarshal(req.Payload, &items); err != nil {
				// The payload never changes, so no retry can fix it.
				return client.Permanent(fmt.Errorf("payload is not a JSON array: %v", err))
			}
			logRun(logger, req, "items", len(items))
			return nil
		},
	}
}

// logRun logs one execution. It logs the payload's size and SHA-256, not
// the payload, which may hold secrets.
func logRun(logger *slog.Logger, req *client.Request, attrs ...any) {
	sum := sha256.Sum256(req.Payload)
	logger.Info("handler ran", append([]any{
		"handler", req.HandlerName, "schedule_id", req.ScheduleID, "execution_id", req.ExecutionID,
		"slot", req.Slot.Format(time.RFC3339Nano), "attempt", req.Attempt,
		"payload_bytes", len(req.Payload), "payload_sha256", hex.EncodeToString(sum[:]),
		"metadata", req.Metadata,
	}, attrs...)...)
}

// createSchedules creates one schedule per handler, each running at once
// and then every interval, and returns their IDs.
func createSchedules(ctx context.Context, pulse *client.Client, interval time.Duration, logger *slog.Logger) ([]string, error) {
	specs := []client.ScheduleSpec{
		{Handler: "example.greet", Payload: []byte("world"), Metadata: map[string]string{"language": "en"}},
		{Handler: "example.count", Payload: []byte(`[1, 2, 3]`), Metadata: map[string]string{"unit": "items"}},
	}
	var ids []string
	for _, spec := range specs {
		spec.Interval = interval
		spec.RunImmediately = true
		spec.Timeout = 5 * time.Second
		id, err := pulse.Create(ctx, spec)
		if err != nil {
			return ids, fmt.Errorf("create the %s schedule: %w", spec.Handler, err)
		}
		logger.Info("schedule created", "schedule_id", id, "handler", spec.Handler, "interval", interval.String())
		ids = append(ids, id)
	}
	return ids, nil
}

// deleteSchedules deletes the schedules the plugin created.
func deleteSchedules(pulse *client.Client, ids []string, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, id := range ids {
		if err := pulse.Delete(ctx, id); err != nil {
			logger.Warn("deleting a schedule failed", "schedule_id", id, "error", err)
			continue
		}
		logger.Info("schedule deleted", "schedule_id", id)
	}
}
