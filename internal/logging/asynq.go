package logging

import (
	"context"
	"fmt"
	"log/slog"
	"os"
)

// AsynqLogger adapts a slog.Logger to the asynq.Logger interface, so asynq's
// own messages join Pulse's structured log.
type AsynqLogger struct {
	Logger *slog.Logger
}

func (l AsynqLogger) log(level slog.Level, args []any) {
	if !l.Logger.Enabled(context.Background(), level) {
		return
	}
	l.Logger.Log(context.Background(), level, fmt.Sprint(args...))
}

// Debug logs at debug level.
func (l AsynqLogger) Debug(args ...any) { l.log(slog.LevelDebug, args) }

// Info logs at info level.
func (l AsynqLogger) Info(args ...any) { l.log(slog.LevelInfo, args) }

// Warn logs at warn level.
func (l AsynqLogger) Warn(args ...any) { l.log(slog.LevelWarn, args) }

// Error logs at error level.
func (l AsynqLogger) Error(args ...any) { l.log(slog.LevelError, args) }

// Fatal logs at error level and exits with status 1, as asynq expects.
func (l AsynqLogger) Fatal(args ...any) {
	l.log(slog.LevelError, args)
	os.Exit(1)
}
