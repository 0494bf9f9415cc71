package logging

import (
	"context"
	"fmt"
	"log/slog"
)

// RedisLogger adapts a slog.Logger to go-redis's logger interface (see
// redis.SetLogger). Without it go-redis writes its own messages, such as each
// failed dial of its connection pool, to stderr as plain text, which breaks a
// JSON log. Messages are logged at warn level; each message format is logged
// at most once per Limiter interval, with the count of those held back.
type RedisLogger struct {
	Logger  *slog.Logger
	Limiter *Limiter
}

// Printf logs one go-redis message.
func (l RedisLogger) Printf(ctx context.Context, format string, args ...any) {
	if !l.Logger.Enabled(ctx, slog.LevelWarn) {
		return
	}
	ok, suppressed := l.Limiter.Allow(format)
	if !ok {
		return
	}
	l.Logger.WarnContext(ctx, fmt.Sprintf(format, args...), "suppressed", suppressed)
}
