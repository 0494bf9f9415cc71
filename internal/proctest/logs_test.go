package proctest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func newTestProcess(name string) *Process {
	return &Process{name: name, done: make(chan struct{}), changed: make(chan struct{})}
}

func TestLineWriterSplitsLines(t *testing.T) {
	p := newTestProcess("worker-1")
	w := &lineWriter{p: p, stream: "stderr"}

	_, err := w.Write([]byte(`{"msg":"a"}` + "\n" + `{"msg":`))
	require.NoError(t, err)
	_, err = w.Write([]byte(`"b"}` + "\nplain"))
	require.NoError(t, err)
	w.flush()

	lines := p.Lines()
	require.Len(t, lines, 3)
	require.Equal(t, "a", lines[0].Msg())
	require.Equal(t, "b", lines[1].Msg())
	require.Equal(t, "plain", lines[2].Text)
	require.Nil(t, lines[2].Fields)
	require.Equal(t, "worker-1", lines[2].Process)
}

func TestExecutionStartsParsesRecords(t *testing.T) {
	w1, w2 := newTestProcess("worker-1"), newTestProcess("worker-2")
	w1.addLine("stderr", `{"level":"DEBUG","msg":"execution started","schedule_id":"S1","execution_id":"E1","slot":"2030-01-02T03:04:05.678Z","attempt":0,"handler":"pulse.log","started_at":"2030-01-02T03:04:05.7Z"}`)
	w1.addLine("stderr", `{"level":"DEBUG","msg":"execution finished","schedule_id":"S1","execution_id":"E1","slot":"2030-01-02T03:04:05.678Z","attempt":0}`)
	w2.addLine("stderr", `{"level":"DEBUG","msg":"execution started","schedule_id":"S1","execution_id":"E1","slot":"2030-01-02T03:04:05.678Z","attempt":1,"handler":"pulse.log","started_at":"2030-01-02T03:04:09Z"}`)

	starts := ExecutionStarts(t, w1, w2)

	slot := time.Date(2030, 1, 2, 3, 4, 5, 678e6, time.UTC)
	records := starts[KeyOf("S1", slot)]
	require.Len(t, starts, 1)
	require.Len(t, records, 2)
	require.Equal(t, ExecutionStart{
		Process: "worker-1", ScheduleID: "S1", ExecutionID: "E1", Slot: slot, Attempt: 0,
		StartedAt: time.Date(2030, 1, 2, 3, 4, 5, 700e6, time.UTC),
	}, records[0])
	require.Equal(t, "worker-2", records[1].Process)
	require.Equal(t, 1, records[1].Attempt)
}

func TestParseExecutionStartRejectsBadAttempt(t *testing.T) {
	p := newTestProcess("worker-1")
	p.addLine("stderr", `{"msg":"execution started","schedule_id":"S1","execution_id":"E1","slot":"2030-01-02T03:04:05Z","attempt":"zero","started_at":"2030-01-02T03:04:05Z"}`)

	_, err := parseExecutionStart(p.Lines()[0])

	require.ErrorContains(t, err, "attempt")
}

func TestAwaitLineSeesLaterLine(t *testing.T) {
	p := newTestProcess("api")
	go p.addLine("stderr", `{"msg":"gRPC API listening"}`)

	l, err := p.awaitLine(5*time.Second, MsgIs("gRPC API listening"))

	require.NoError(t, err)
	require.Equal(t, "api", l.Process)
}

func TestAwaitLineTimesOut(t *testing.T) {
	p := newTestProcess("api")

	_, err := p.awaitLine(10*time.Millisecond, MsgIs("never"))

	require.ErrorIs(t, err, errLineTimeout)
}

func TestParseMetricSumsLabelSets(t *testing.T) {
	text := `# HELP pulse_worker_executions_total Handler runs.
# TYPE pulse_worker_executions_total counter
pulse_worker_executions_total{handler="pulse.log",outcome="succeeded"} 7
pulse_worker_executions_total{handler="pulse.sleep",outcome="failed"} 2
pulse_worker_executions_total_other 100
pulse_scheduler_slots_dispatched_total 12
`
	sum, found, err := parseMetric(text, "pulse_worker_executions_total")
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, 9.0, sum)

	sum, found, err = parseMetric(text, "pulse_scheduler_slots_dispatched_total")
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, 12.0, sum)

	_, found, err = parseMetric(text, "pulse_absent_total")
	require.NoError(t, err)
	require.False(t, found)
}
