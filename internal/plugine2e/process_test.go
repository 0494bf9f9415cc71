package plugine2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/api"
	"github.com/pulse-sched/pulse/client"
	"github.com/pulse-sched/pulse/internal/redistest"
)

// command is a process other than pulse that a test runs, such as the
// example plugin. It keeps the JSON lines of its standard error.
type command struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}

	mu    sync.Mutex
	lines []map[string]any
	raw   []string
}

// startCommand starts bin with args and env (besides the caller's
// environment without PULSE_* variables) and kills it when the test ends.
func startCommand(t *testing.T, name, bin string, env []string, args ...string) *command {
	t.Helper()
	c := &command{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PULSE_") {
			c.cmd.Env = append(c.cmd.Env, kv)
		}
	}
	c.cmd.Env = append(c.cmd.Env, env...)
	stderr, err := c.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, c.cmd.Start())

	go func() {
		defer close(c.done)
		c.collect(stderr)
		_ = c.cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s did not exit within 10s of SIGKILL", name)
		}
		if t.Failed() {
			c.mu.Lock()
			defer c.mu.Unlock()
			t.Logf("%s wrote:\n%s", name, strings.Join(c.raw, "\n"))
		}
	})
	return c
}

func (c *command) collect(r io.Reader) {
	scanner := bufio.NewScanner(r)
	for scanner.Scan() {
		text := scanner.Text()
		var line map[string]any
		_ = json.Unmarshal([]byte(text), &line)
		c.mu.Lock()
		c.raw = append(c.raw, text)
		if line != nil {
			c.lines = append(c.lines, line)
		}
		c.mu.Unlock()
	}
}

// withMsg returns the JSON lines whose msg is msg.
func (c *command) withMsg(msg string) []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []map[string]any
	for _, l := range c.lines {
		if l["msg"] == msg {
			out = append(out, l)
		}
	}
	return out
}

// wait waits up to timeout for the process to exit and returns its exit code.
func (c *command) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-c.done:
		return c.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %s", c.name, timeout)
		return 0
	}
}

// freeAddr returns a free loopback address.
func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := redistest.FreePort()
	require.NoError(t, err)
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// writePlugins writes a plugins file of plugins with their tokens,
// replacing any file at path by renaming a new file over it.
func writePlugins(t *testing.T, path string, entries ...string) {
	t.Helper()
	yaml := "plugins:\n" + strings.Join(entries, "")
	tmp := path + ".new"
	require.NoError(t, os.WriteFile(tmp, []byte(yaml), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

// pluginEntry is one plugin of a plugins file.
func pluginEntry(atsCode, token, endpoint string) string {
	entry := fmt.Sprintf("  - ats_code: %s\n    token_sha256: %s\n", atsCode, api.TokenDigest(token))
	if endpoint != "" {
		entry += fmt.Sprintf("    endpoint: %q\n", endpoint)
	}
	return entry
}

func newClient(t *testing.T, addr, token string) *client.Client {
	t.Helper()
	c, err := client.New(addr, token, client.WithCallTimeout(5*time.Second))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// terminate sends SIGTERM to the command.
func (c *command) terminate(t *testing.T) {
	t.Helper()
	require.NoError(t, c.cmd.Process.Signal(syscall.SIGTERM))
}
