// Command pulse runs Pulse's roles (API, scheduler, worker) and manages
// schedules from the command line. Run "pulse --help" for the commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/redis/go-redis/v9"

	"github.com/pulse-sched/pulse/internal/logging"
)

// Exit codes that scripts can rely on.
const (
	exitOK = 0
	// exitRejected means Pulse responded and rejected the request (an
	// in-band error such as NOT_FOUND or INVALID_ARGUMENT), or a role failed.
	exitRejected = 1
	// exitUsage means the command line was invalid.
	exitUsage = 2
	// exitUnavailable means Pulse or Redis could not be reached in time.
	exitUnavailable = 3
)

// cli is the command-line grammar.
type cli struct {
	LogFormat string `name:"log-format" enum:"auto,json,text" default:"auto" env:"PULSE_LOG_FORMAT" help:"Log format: auto (text on a terminal, JSON otherwise), json or text."`
	LogLevel  string `name:"log-level" enum:"debug,info,warn,error" default:"info" env:"PULSE_LOG_LEVEL" help:"Lowest level logged: debug, info, warn or error."`

	Serve     serveCmd     `cmd:"" help:"Run the API, scheduler and worker in one process. Without --redis-url it runs on an embedded in-memory Redis that keeps nothing."`
	API       apiCmd       `cmd:"" name:"api" help:"Run the ScheduleService gRPC API."`
	Scheduler schedulerCmd `cmd:"" help:"Run a scheduler, which enqueues due slots."`
	Worker    workerCmd    `cmd:"" help:"Run a worker, which runs the handlers of enqueued slots."`
	Schedule  scheduleCmd  `cmd:"" help:"Create, read, pause, resume and delete schedules through the API."`
	Version   versionCmd   `cmd:"" help:"Print the version of this binary."`
}

// globals holds the logger and standard streams that every command's Run
// receives besides its own flags.
type globals struct {
	logger *slog.Logger
	stdout io.Writer
	stderr io.Writer
	stdin  io.Reader
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var grammar cli
	exitCode := -1
	parser, err := kong.New(&grammar,
		kong.Name("pulse"),
		kong.Description("Pulse runs recurring jobs (schedules) for plugins, on Redis and asynq."),
		kong.UsageOnError(),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { exitCode = code }),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
	)
	if err != nil {
		fmt.Fprintf(stderr, "pulse: %v\n", err)
		return exitUsage
	}
	kctx, err := parser.Parse(args)
	if exitCode >= 0 {
		// --help printed its text and asked to exit.
		return exitCode
	}
	if err != nil {
		fmt.Fprintf(stderr, "pulse: %v\n", err)
		return exitUsage
	}

	logger, err := logging.New(stderr, logging.Format(grammar.LogFormat), grammar.LogLevel)
	if err != nil {
		fmt.Fprintf(stderr, "pulse: %v\n", err)
		return exitUsage
	}
	// go-redis logs some failures itself, such as every failed dial while
	// Redis is down. Send them to the same log, limited to one line per
	// message format every 30s.
	redis.SetLogger(logging.RedisLogger{Logger: logger.With("source", "go-redis"), Limiter: logging.NewLimiter(30 * time.Second)})
	// Libraries that log with the standard log package, such as asynq's
	// queue metrics collector, log through the same handler.
	slog.SetDefault(logger)
	g := &globals{logger: logger, stdout: stdout, stderr: stderr, stdin: stdin}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	kctx.BindTo(ctx, (*context.Context)(nil))
	err = kctx.Run(g)
	if err == nil {
		return exitOK
	}

	var coded *exitError
	if errors.As(err, &coded) {
		if coded.message != "" {
			fmt.Fprintf(stderr, "pulse: %s\n", coded.message)
		}
		return coded.code
	}
	fmt.Fprintf(stderr, "pulse: %v\n", err)
	return exitRejected
}

// exitError ends a command with a given exit code.
type exitError struct {
	code    int
	message string
}

func (e *exitError) Error() string { return e.message }

// usageError returns an error that exits with exitUsage.
func usageError(format string, args ...any) error {
	return &exitError{code: exitUsage, message: fmt.Sprintf(format, args...)}
}

type versionCmd struct{}

// Run prints the module version, or for a build from a work tree the
// commit it was built from.
func (versionCmd) Run(g *globals) error {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		fmt.Fprintln(g.stdout, "pulse (unknown version)")
		return nil
	}
	version := info.Main.Version
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if rev := settings["vcs.revision"]; rev != "" && (version == "" || version == "(devel)") {
		version = "commit " + rev[:min(12, len(rev))]
		if settings["vcs.modified"] == "true" {
			version += " with local changes"
		}
	}
	fmt.Fprintf(g.stdout, "pulse %s (%s)\n", version, info.GoVersion)
	return nil
}
