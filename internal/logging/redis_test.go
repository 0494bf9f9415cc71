package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRedisLoggerWritesJSON(t *testing.T) {
	var buf bytes.Buffer
	logger, err := New(&buf, FormatJSON, "info")
	require.NoError(t, err)
	l := RedisLogger{Logger: logger, Limiter: NewLimiter(time.Hour)}

	l.Printf(context.Background(), "redis: connection pool: failed to dial after %d attempts: %v", 5, "connection refused")

	var record map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &record))
	require.Equal(t, "WARN", record["level"])
	require.Equal(t, "redis: connection pool: failed to dial after 5 attempts: connection refused", record["msg"])
}

func TestRedisLoggerLimitsRepeats(t *testing.T) {
	var buf bytes.Buffer
	logger, err := New(&buf, FormatJSON, "info")
	require.NoError(t, err)
	l := RedisLogger{Logger: logger, Limiter: NewLimiter(time.Hour)}

	for i := range 10 {
		l.Printf(context.Background(), "failed to dial after %d attempts", i)
	}
	l.Printf(context.Background(), "another message")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2)
	require.Contains(t, lines[0], "failed to dial after 0 attempts")
	require.Contains(t, lines[1], "another message")
}
