package proctest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// Line is one line that a process wrote to its stdout or stderr.
type Line struct {
	// Process is the name of the process that wrote the line.
	Process string
	// Stream is "stderr", where pulse logs, or "stdout".
	Stream string
	// Text is the line without its newline.
	Text string
	// Fields is the decoded JSON log record; nil when the line is not a JSON
	// object.
	Fields map[string]any
}

// Msg returns the log record's message.
func (l Line) Msg() string { return l.String("msg") }

// String returns a string attribute of the log record; empty when it is
// absent or not a string.
func (l Line) String(key string) string {
	s, _ := l.Fields[key].(string)
	return s
}

// MsgIs returns a predicate that matches log records with message msg.
func MsgIs(msg string) func(Line) bool {
	return func(l Line) bool { return l.Msg() == msg }
}

// lineWriter splits a process's output into lines. Each stream has its own
// writer, and exec.Cmd writes to it from one goroutine.
type lineWriter struct {
	p       *Process
	stream  string
	partial []byte
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.partial = append(w.partial, b...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.p.addLine(w.stream, string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
	return len(b), nil
}

// flush adds a last line that has no newline.
func (w *lineWriter) flush() {
	if len(w.partial) > 0 {
		w.p.addLine(w.stream, string(w.partial))
		w.partial = nil
	}
}

func (p *Process) addLine(stream, text string) {
	l := Line{Process: p.name, Stream: stream, Text: text}
	if strings.HasPrefix(text, "{") {
		var fields map[string]any
		if json.Unmarshal([]byte(text), &fields) == nil {
			l.Fields = fields
		}
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	p.lines = append(p.lines, l)
	if p.logFile != nil {
		prefix := ""
		if stream != "stderr" {
			prefix = stream + ": "
		}
		fmt.Fprintf(p.logFile, "%s%s\n", prefix, text)
	}
	close(p.changed)
	p.changed = make(chan struct{})
}

// Lines returns the lines that the process has written so far.
func (p *Process) Lines() []Line {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.lines)
}

func (p *Process) hasLine(match func(Line) bool) bool {
	for _, l := range p.Lines() {
		if match(l) {
			return true
		}
	}
	return false
}

// WaitLog waits up to timeout for a line, written since the start, that
// matches match, and returns the first one. It fails the test when timeout
// passes first or the process exits without writing one; what describes the
// line in that failure.
func (p *Process) WaitLog(t testing.TB, timeout time.Duration, what string, match func(Line) bool) Line {
	t.Helper()
	l, err := p.awaitLine(timeout, match)
	if err != nil {
		t.Fatalf("proctest: %s wrote no %s: %v", p.name, what, err)
	}
	return l
}

var errLineTimeout = errors.New("timed out")

// awaitLine waits for a matching line, checking each line once.
func (p *Process) awaitLine(timeout time.Duration, match func(Line) bool) (Line, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	next := 0
	for {
		p.mu.Lock()
		// Lines are only appended, so the elements of this slice never change.
		fresh := p.lines[next:]
		next = len(p.lines)
		changed := p.changed
		p.mu.Unlock()

		for _, l := range fresh {
			if match(l) {
				return l, nil
			}
		}
		select {
		case <-changed:
		case <-p.done:
			// The exit flushed the output, so one more pass checks every line.
			if l, ok := p.findAfter(next, match); ok {
				return l, nil
			}
			return Line{}, fmt.Errorf("the process %s", p.exitDescription())
		case <-timer.C:
			return Line{}, fmt.Errorf("%w after %s", errLineTimeout, timeout)
		}
	}
}

func (p *Process) findAfter(from int, match func(Line) bool) (Line, bool) {
	p.mu.Lock()
	fresh := p.lines[from:]
	p.mu.Unlock()
	for _, l := range fresh {
		if match(l) {
			return l, true
		}
	}
	return Line{}, false
}

// tail returns the last n lines of output, one per line.
func (p *Process) tail(n int) string {
	lines := p.Lines()
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("    ")
		b.WriteString(l.Text)
		b.WriteByte('\n')
	}
	return b.String()
}

// ExecutionStart is one "execution started" log record of a worker.
type ExecutionStart struct {
	// Process is the name of the worker process that logged it.
	Process     string
	ScheduleID  string
	ExecutionID string
	Slot        time.Time
	Attempt     int
	// StartedAt is the Redis time at which the worker recorded the start.
	StartedAt time.Time
}

// SlotKey identifies one slot of one schedule.
type SlotKey struct {
	ScheduleID string
	// SlotMS is the slot in Unix milliseconds.
	SlotMS int64
}

// KeyOf returns the key of a schedule's slot.
func KeyOf(scheduleID string, slot time.Time) SlotKey {
	return SlotKey{ScheduleID: scheduleID, SlotMS: slot.UnixMilli()}
}

// ExecutionStarts collects the "execution started" records of the given
// processes by slot, in the order each process logged them. It fails the test
// when such a record lacks an attribute or has one of the wrong type.
func ExecutionStarts(t testing.TB, workers ...*Process) map[SlotKey][]ExecutionStart {
	t.Helper()
	out := map[SlotKey][]ExecutionStart{}
	for _, w := range workers {
		for _, l := range w.Lines() {
			if l.Msg() != "execution started" {
				continue
			}
			e, err := parseExecutionStart(l)
			if err != nil {
				t.Fatalf("proctest: %s: %v in log line %s", w.name, err, l.Text)
			}
			key := KeyOf(e.ScheduleID, e.Slot)
			out[key] = append(out[key], e)
		}
	}
	return out
}

func parseExecutionStart(l Line) (ExecutionStart, error) {
	e := ExecutionStart{Process: l.Process, ScheduleID: l.String("schedule_id"), ExecutionID: l.String("execution_id")}
	if e.ScheduleID == "" {
		return e, errors.New("schedule_id is missing")
	}
	if e.ExecutionID == "" {
		return e, errors.New("execution_id is missing")
	}
	var err error
	if e.Slot, err = time.Parse(time.RFC3339Nano, l.String("slot")); err != nil {
		return e, fmt.Errorf("slot: %w", err)
	}
	if e.StartedAt, err = time.Parse(time.RFC3339Nano, l.String("started_at")); err != nil {
		return e, fmt.Errorf("started_at: %w", err)
	}
	attempt, ok := l.Fields["attempt"].(float64)
	if !ok || attempt < 0 || attempt != float64(int(attempt)) {
		return e, fmt.Errorf("attempt %v is not a non-negative integer", l.Fields["attempt"])
	}
	e.Attempt = int(attempt)
	return e, nil
}
