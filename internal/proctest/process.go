package proctest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/proto/protocolpb"
)

const (
	// listenTimeout bounds how long Start waits for a process to listen. It
	// exceeds the 30s for which a starting pulse process waits for Redis.
	listenTimeout = 45 * time.Second
	// startAttempts is how often Start picks new ports after another
	// program took a free port before the process could listen on it.
	startAttempts = 3
	// killTimeout bounds the wait for a killed process to exit.
	killTimeout = 10 * time.Second
	// tailLines is the number of log lines printed when a test fails.
	tailLines = 40
	// httpTimeout bounds one request to the admin HTTP server.
	httpTimeout = 5 * time.Second
)

// Options sets up one pulse process.
type Options struct {
	// Name labels the process in failure messages and execution records,
	// such as "worker-2". Default: the role, Args[0].
	Name string
	// Args is the command line after the binary, starting with the role:
	// serve, api, scheduler or worker.
	Args []string
	// RedisURL is passed as PULSE_REDIS_URL unless empty.
	RedisURL string
	// PluginsFile is passed as PULSE_PLUGINS_FILE unless empty.
	PluginsFile string
	// Env holds more PULSE_* variables, such as PULSE_CLAIM_LEASE. The
	// harness sets PULSE_LOG_FORMAT, PULSE_LOG_LEVEL, PULSE_GRPC_ADDR and
	// PULSE_HTTP_ADDR itself, and those win over Env.
	Env map[string]string
	// NoHTTP turns the admin HTTP server off; WaitReady, HTTPGet and Metric
	// then fail.
	NoHTTP bool
}

// Process is one running pulse process owned by a test.
type Process struct {
	name     string
	grpcAddr string // empty for roles without the API
	httpAddr string // empty with Options.NoHTTP
	logPath  string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	// state is the exit status, set before done is closed.
	state *os.ProcessState

	mu      sync.Mutex
	lines   []Line
	changed chan struct{} // closed and replaced when a line is added
	logFile *os.File
	conn    *grpc.ClientConn
}

// errPortTaken means the process could not listen because another program
// took its port first.
var errPortTaken = errors.New("a port was taken before the process could listen on it")

// Start starts a pulse process and waits until it listens on its gRPC
// address (roles serve and api) and its admin HTTP address. It fails the test
// when the process exits first or does not listen within 45s. The process is
// killed when the test ends.
func Start(t testing.TB, opts Options) *Process {
	t.Helper()
	if len(opts.Args) == 0 {
		t.Fatal("proctest: Options.Args is empty: it must start with a role such as serve or worker")
	}
	bin := Binary(t)
	if opts.Name == "" {
		opts.Name = opts.Args[0]
	}
	dir := t.TempDir()

	var lastErr error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		p, err := launch(t, bin, dir, opts, attempt)
		if err != nil {
			t.Fatalf("proctest: start %s: %v", opts.Name, err)
		}
		lastErr = p.waitListening(listenTimeout)
		if lastErr == nil {
			return p
		}
		if !errors.Is(lastErr, errPortTaken) {
			break
		}
	}
	t.Fatalf("proctest: start %s: %v", opts.Name, lastErr)
	return nil
}

// launch starts the process once, with new free ports.
func launch(t testing.TB, bin, dir string, opts Options, attempt int) (*Process, error) {
	p := &Process{
		name:    opts.Name,
		logPath: filepath.Join(dir, fmt.Sprintf("%s.%d.log", opts.Name, attempt)),
		done:    make(chan struct{}),
		changed: make(chan struct{}),
	}

	env := map[string]string{}
	for k, v := range opts.Env {
		env[k] = v
	}
	if opts.RedisURL != "" {
		env["PULSE_REDIS_URL"] = opts.RedisURL
	}
	if opts.PluginsFile != "" {
		env["PULSE_PLUGINS_FILE"] = opts.PluginsFile
	}
	env["PULSE_LOG_FORMAT"] = "json"
	env["PULSE_LOG_LEVEL"] = "debug"
	env["PULSE_HTTP_ADDR"] = ""
	if !opts.NoHTTP {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		p.httpAddr = addr
		env["PULSE_HTTP_ADDR"] = addr
	}
	// Every role gets a free gRPC address, so that none falls back to the
	// default port, even where the role does not serve the API.
	grpcAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	env["PULSE_GRPC_ADDR"] = grpcAddr
	if opts.Args[0] == "serve" || opts.Args[0] == "api" {
		p.grpcAddr = grpcAddr
	}

	logFile, err := os.Create(p.logPath)
	if err != nil {
		return nil, err
	}
	p.logFile = logFile

	cmd := exec.Command(bin, opts.Args...)
	cmd.Env = environ(env)
	stdout := &lineWriter{p: p, stream: "stdout"}
	stderr := &lineWriter{p: p, stream: "stderr"}
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	p.cmd = cmd
	t.Cleanup(func() { p.cleanup(t) })

	go func() {
		_ = cmd.Wait()
		stdout.flush()
		stderr.flush()
		p.mu.Lock()
		p.state = cmd.ProcessState
		p.logFile.Close()
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// environ returns the caller's environment without any PULSE_* variable,
// plus vars.
func environ(vars map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PULSE_") {
			env = append(env, kv)
		}
	}
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		env = append(env, k+"="+vars[k])
	}
	return env
}

func freeAddr() (string, error) {
	port, err := redistest.FreePort()
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// waitListening waits for the log lines that report each listener.
func (p *Process) waitListening(timeout time.Duration) error {
	var want []string
	if p.grpcAddr != "" {
		want = append(want, "gRPC API listening")
	}
	if p.httpAddr != "" {
		want = append(want, "HTTP admin server listening")
	}
	for _, msg := range want {
		_, err := p.awaitLine(timeout, MsgIs(msg))
		if err == nil {
			continue
		}
		if p.Exited() && p.hasLine(func(l Line) bool { return strings.Contains(l.Text, "address already in use") }) {
			return errPortTaken
		}
		return fmt.Errorf("no %q log line: %w\n%s", msg, err, p.tail(tailLines))
	}
	return nil
}

// cleanup kills the process if it still runs and, when the test failed,
// prints the end of its log.
func (p *Process) cleanup(t testing.TB) {
	state := "was still running at the end of the test"
	if p.Exited() {
		state = p.exitDescription()
	} else {
		_ = p.cmd.Process.Kill()
	}
	select {
	case <-p.done:
	case <-time.After(killTimeout):
		t.Errorf("proctest: %s (pid %d) did not exit within %s of SIGKILL", p.name, p.PID(), killTimeout)
	}

	p.mu.Lock()
	conn := p.conn
	p.conn = nil
	p.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}

	if t.Failed() {
		t.Logf("proctest: %s (pid %d) %s; last lines of its log:\n%s", p.name, p.PID(), state, p.tail(tailLines))
	}
}

// Name returns the name given in Options.
func (p *Process) Name() string { return p.name }

// PID returns the process ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// GRPCAddr returns the host:port of the gRPC API; empty for roles without it.
func (p *Process) GRPCAddr() string { return p.grpcAddr }

// HTTPAddr returns the host:port of the admin HTTP server; empty with
// Options.NoHTTP.
func (p *Process) HTTPAddr() string { return p.httpAddr }

// LogPath returns the file that receives the process's output. It lies in
// the test's temporary directory, which is removed after the test.
func (p *Process) LogPath() string { return p.logPath }

// Done returns a channel that is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitCode returns the exit code of an exited process, -1 for one ended by a
// signal. It fails the test while the process runs.
func (p *Process) ExitCode(t testing.TB) int {
	t.Helper()
	if !p.Exited() {
		t.Fatalf("proctest: %s is still running", p.name)
	}
	return p.state.ExitCode()
}

// Wait waits up to timeout for the process to exit and returns its exit code,
// -1 when a signal ended it. It fails the test when the process still runs.
func (p *Process) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return p.state.ExitCode()
	case <-timer.C:
		t.Fatalf("proctest: %s did not exit within %s", p.name, timeout)
		return 0
	}
}

func (p *Process) exitDescription() string {
	if !p.Exited() {
		return "is still running"
	}
	return "exited: " + p.state.String()
}

// Signal sends sig to the process. It fails the test when the process has
// exited.
func (p *Process) Signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("proctest: send %s to %s: %v", sig, p.name, err)
	}
}

// Kill sends SIGKILL and waits until the process has exited.
func (p *Process) Kill(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("proctest: kill %s: %v", p.name, err)
	}
	p.Wait(t, killTimeout)
}

// Terminate sends SIGTERM, which makes pulse stop gracefully. Use
// Wait to wait for the exit.
func (p *Process) Terminate(t testing.TB) {
	t.Helper()
	p.Signal(t, syscall.SIGTERM)
}

// Suspend sends SIGSTOP, which freezes the process until Resume.
func (p *Process) Suspend(t testing.TB) {
	t.Helper()
	p.Signal(t, syscall.SIGSTOP)
}

// Resume sends SIGCONT to a process frozen by Suspend.
func (p *Process) Resume(t testing.TB) {
	t.Helper()
	p.Signal(t, syscall.SIGCONT)
}

// Client returns a ScheduleService client of the process's gRPC API. The
// connection is closed when the test ends.
func (p *Process) Client(t testing.TB) protocolpb.ScheduleServiceClient {
	t.Helper()
	if p.grpcAddr == "" {
		t.Fatalf("proctest: %s serves no gRPC API", p.name)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == nil {
		conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatalf("proctest: dial %s at %s: %v", p.name, p.grpcAddr, err)
		}
		p.conn = conn
	}
	return protocolpb.NewScheduleServiceClient(p.conn)
}

// HTTPGet sends GET path to the admin HTTP server and returns the status code
// and body. A failed request fails the test.
func (p *Process) HTTPGet(t testing.TB, path string) (int, string) {
	t.Helper()
	status, body, err := p.httpGet(path)
	if err != nil {
		t.Fatalf("proctest: %v", err)
	}
	return status, body
}

func (p *Process) httpGet(path string) (int, string, error) {
	if p.httpAddr == "" {
		return 0, "", fmt.Errorf("%s serves no admin HTTP server", p.name)
	}
	client := &http.Client{Timeout: httpTimeout}
	resp, err := client.Get("http://" + p.httpAddr + path)
	if err != nil {
		return 0, "", fmt.Errorf("GET %s of %s: %w", path, p.name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", fmt.Errorf("GET %s of %s: read body: %w", path, p.name, err)
	}
	return resp.StatusCode, string(body), nil
}

// WaitReady waits up to timeout for /readyz to return 200.
func (p *Process) WaitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	p.WaitHTTPStatus(t, "/readyz", http.StatusOK, timeout)
}

// WaitHTTPStatus polls GET path every 50ms until it returns want. It fails
// the test when timeout passes first or the process exits.
func (p *Process) WaitHTTPStatus(t testing.TB, path string, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		status, body, err := p.httpGet(path)
		if err == nil && status == want {
			return
		}
		last := fmt.Sprintf("status %d: %s", status, strings.TrimSpace(body))
		if err != nil {
			last = err.Error()
		}
		if p.Exited() {
			t.Fatalf("proctest: %s %s while waiting for %s to return %d", p.name, p.exitDescription(), path, want)
		}
		if time.Now().After(deadline) {
			t.Fatalf("proctest: %s did not return %d on %s within %s; last result: %s", p.name, want, path, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Metric returns the value of a Prometheus metric from /metrics, summed over
// every label set. It fails the test when the metric is absent.
func (p *Process) Metric(t testing.TB, name string) float64 {
	t.Helper()
	status, body := p.HTTPGet(t, "/metrics")
	if status != http.StatusOK {
		t.Fatalf("proctest: GET /metrics of %s returned %d", p.name, status)
	}
	sum, found, err := parseMetric(body, name)
	if err != nil {
		t.Fatalf("proctest: /metrics of %s: %v", p.name, err)
	}
	if !found {
		t.Fatalf("proctest: /metrics of %s has no metric %s", p.name, name)
	}
	return sum
}

// parseMetric sums the samples of the metric name in the Prometheus text
// format.
func parseMetric(text, name string) (sum float64, found bool, err error) {
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" {
			continue
		}
		switch rest[0] {
		case '{':
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				return 0, false, fmt.Errorf("malformed sample %q", line)
			}
			rest = rest[end+1:]
		case ' ':
		default:
			continue // another metric whose name starts with name
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return 0, false, fmt.Errorf("sample without value %q", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, false, fmt.Errorf("sample %q: %w", line, err)
		}
		sum += v
		found = true
	}
	return sum, found, nil
}
