// Package logging builds Pulse's slog loggers and limits repeated log lines.
package logging

import (
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// Format selects how log lines are written.
type Format string

// The log formats.
const (
	// FormatAuto writes text to a terminal and JSON otherwise.
	FormatAuto Format = "auto"
	FormatJSON Format = "json"
	FormatText Format = "text"
)

// New returns a logger writing to w in format at level ("debug", "info",
// "warn" or "error").
func New(w io.Writer, format Format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lvl}

	if format == FormatAuto || format == "" {
		format = FormatJSON
		if f, ok := w.(*os.File); ok && isTerminal(f) {
			format = FormatText
		}
	}
	if strings.EqualFold(string(format), string(FormatText)) {
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(w, opts)), nil
}

func isTerminal(f *os.File) bool {
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

// Limiter lets a log line with a given key through at most once per
// interval, and counts the lines it held back, so a failing loop cannot flood
// the log. It is safe for concurrent use.
type Limiter struct {
	interval time.Duration

	mu    sync.Mutex
	state map[string]*limitState
}

type limitState struct {
	last       time.Time
	suppressed int
}

// NewLimiter returns a Limiter that lets one line per key through per
// interval.
func NewLimiter(interval time.Duration) *Limiter {
	return &Limiter{interval: interval, state: map[string]*limitState{}}
}

// Allow reports whether a line with key may be logged now. When it may, it
// also returns how many lines with key were held back since the last one.
func (l *Limiter) Allow(key string) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()

	now := time.Now()
	st, found := l.state[key]
	if !found {
		l.state[key] = &limitState{last: now}
		return true, 0
	}
	if now.Sub(st.last) < l.interval {
		st.suppressed++
		return false, 0
	}
	suppressed = st.suppressed
	st.last = now
	st.suppressed = 0
	return true, suppressed
}

// Reset clears the state of key, so its next line is logged at once. Loops call it when
// the condition behind the key has cleared.
func (l *Limiter) Reset(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.state, key)
}
