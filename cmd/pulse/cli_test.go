package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/api"
	"github.com/pulse-sched/pulse/internal/proctest"
	"github.com/pulse-sched/pulse/internal/redistest"
)

func TestMain(m *testing.M) {
	os.Exit(proctest.Main(m))
}

const (
	cliToken   = "cli-plugin-token"
	adminToken = "cli-admin-token"
)

// result is what one run of the binary did.
type result struct {
	code           int
	stdout, stderr string
}

// runner runs the pulse binary with args, the variables env and stdin, and a
// bound of 30s.
type runner struct {
	t   *testing.T
	bin string
	env []string
}

func (c runner) run(stdin string, args ...string) result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PULSE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, c.env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		c.t.Fatalf("run pulse %s: %v", strings.Join(args, " "), err)
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
}

// ok runs the command and requires exit code 0.
func (c runner) ok(stdin string, args ...string) string {
	c.t.Helper()
	r := c.run(stdin, args...)
	require.Equalf(c.t, 0, r.code, "pulse %s: stderr %q", strings.Join(args, " "), r.stderr)
	return r.stdout
}

// fails runs the command and requires the exit code and a message on
// standard error that contains every part.
func (c runner) fails(code int, parts []string, args ...string) {
	c.t.Helper()
	r := c.run("", args...)
	require.Equalf(c.t, code, r.code, "pulse %s: stdout %q stderr %q", strings.Join(args, " "), r.stdout, r.stderr)
	for _, part := range parts {
		require.Containsf(c.t, r.stderr, part, "pulse %s", strings.Join(args, " "))
	}
}

func jsonObject(t *testing.T, s string) map[string]any {
	t.Helper()
	var out map[string]any
	require.NoError(t, json.Unmarshal([]byte(s), &out), s)
	return out
}

func TestScheduleCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("runs pulse serve and the pulse binary")
	}
	redis := redistest.Start(t)
	plugins := filepath.Join(t.TempDir(), "plugins.yaml")
	require.NoError(t, os.WriteFile(plugins, []byte(fmt.Sprintf(
		"plugins:\n  - ats_code: cli\n    token_sha256: %s\n    endpoint: \"127.0.0.1:9\"\nadmins:\n  - name: ops\n    token_sha256: %s\n",
		api.TokenDigest(cliToken), api.TokenDigest(adminToken))), 0o600))
	srv := proctest.Start(t, proctest.Options{Name: "serve", Args: []string{"serve"}, RedisURL: redis.URL(), PluginsFile: plugins})
	srv.WaitReady(t, 30*time.Second)
	c := runner{t: t, bin: proctest.Binary(t), env: []string{"PULSE_ADDR=" + srv.GRPCAddr(), "PULSE_TOKEN=" + cliToken}}

	var id string
	t.Run("create and get, human", func(t *testing.T) {
		id = strings.TrimSpace(c.ok("", "schedule", "create", "--handler", "pulse.log", "--interval", "1s",
			"--run-immediately", "--payload", "hello", "-m", "team=core", "-m", "zone=eu"))
		require.Len(t, id, 26, "the ID is a ULID")

		// The first slot runs at once; get shows its outcome.
		require.Eventually(t, func() bool {
			return strings.Contains(c.ok("", "schedule", "get", id), "last_status:           succeeded")
		}, 15*time.Second, 100*time.Millisecond)
		out := c.ok("", "schedule", "get", id)
		for _, row := range []string{
			"id:                    " + id, "state:                 active", "handler_name:          pulse.log",
			"source_url:            127.0.0.1:9", "interval_seconds:      1", "consecutive_failures:  0",
			"total_runs:            ", "last_error:            -", "paused_reason:         -",
			"timeout_seconds:       30", "max_retries:           3", "pause_after_failures:  never",
			"misfire_policy:        run_latest", "overlap_policy:        skip", "payload:               5 bytes",
			`metadata:              {"team":"core","zone":"eu"}`,
		} {
			require.Contains(t, out, row)
		}
	})

	t.Run("create and get, json, with every option", func(t *testing.T) {
		startAt := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
		created := jsonObject(t, c.ok("", "schedule", "create", "-o", "json", "--handler", "report.daily",
			"--interval", "2m", "--handler-timeout", "45s", "--max-retries", "0", "--pause-after-failures", "4",
			"--misfire-policy", "run_all", "--misfire-window", "10m", "--overlap-policy", "buffer_one",
			"--start-at", startAt.Format(time.RFC3339)))
		newID, ok := created["schedule_id"].(string)
		require.True(t, ok, "create printed %v", created)

		job := jsonObject(t, c.ok("", "schedule", "get", newID, "--output", "json"))
		require.Equal(t, "report.daily", job["handler_name"])
		require.EqualValues(t, 120, job["interval_seconds"])
		require.EqualValues(t, 45, job["timeout_seconds"])
		require.EqualValues(t, 0, job["max_retries"])
		require.EqualValues(t, 4, job["pause_after_failures"])
		require.Equal(t, "run_all", job["misfire_policy"])
		require.EqualValues(t, 600, job["misfire_window_seconds"])
		require.Equal(t, "buffer_one", job["overlap_policy"])
		require.Equal(t, startAt.Format(api.TimeFormat), job["next_run_at"])
		for _, field := range []string{"last_status", "last_error", "consecutive_failures", "total_runs", "paused_reason", "skipped_slots"} {
			require.Contains(t, job, field, "get --output json lacks %s", field)
		}
	})

	t.Run("payload from a file and from standard input", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "payload.bin")
		require.NoError(t, os.WriteFile(file, []byte{0, 1, 2, 0xff}, 0o600))
		fromFile := strings.TrimSpace(c.ok("", "schedule", "create", "--handler", "pulse.log", "--interval", "60", "--payload-file", file))
		fromStdin := strings.TrimSpace(c.ok("from stdin", "schedule", "create", "--handler", "pulse.log", "--interval", "60", "--payload-file", "-"))

		payload := func(id string) []byte {
			b, err := base64.StdEncoding.DecodeString(jsonObject(t, c.ok("", "schedule", "get", id, "-o", "json"))["payload"].(string))
			require.NoError(t, err)
			return b
		}
		require.Equal(t, []byte{0, 1, 2, 0xff}, payload(fromFile))
		require.Equal(t, []byte("from stdin"), payload(fromStdin))
	})

	t.Run("pause, resume and delete", func(t *testing.T) {
		require.Equal(t, "schedule "+id+" paused\n", c.ok("", "schedule", "pause", id))
		require.Contains(t, c.ok("", "schedule", "get", id), "state:                 paused")
		require.Equal(t, map[string]any{"schedule_id": id, "state": "paused"}, jsonObject(t, c.ok("", "schedule", "pause", id, "-o", "json")))
		require.Equal(t, "schedule "+id+" resumed\n", c.ok("", "schedule", "resume", id))
		require.Equal(t, map[string]any{"schedule_id": id, "state": "active"}, jsonObject(t, c.ok("", "schedule", "resume", id, "-o", "json")))
		require.Equal(t, map[string]any{"schedule_id": id, "state": "deleted"}, jsonObject(t, c.ok("", "schedule", "delete", id, "-o", "json")))
		require.Equal(t, "schedule "+id+" deleted\n", c.ok("", "schedule", "delete", id))
		require.Equal(t, "deleted", jsonObject(t, c.ok("", "schedule", "get", id, "-o", "json"))["state"])
	})

	t.Run("admin creates for a plugin", func(t *testing.T) {
		admin := runner{t: t, bin: c.bin, env: []string{"PULSE_ADDR=" + srv.GRPCAddr(), "PULSE_TOKEN=" + adminToken}}
		newID := strings.TrimSpace(admin.ok("", "schedule", "create", "--handler", "pulse.log", "--interval", "60", "--ats-code", "cli"))
		require.Equal(t, "cli", jsonObject(t, c.ok("", "schedule", "get", newID, "-o", "json"))["ats_code"])
	})

	t.Run("rejected requests exit 1", func(t *testing.T) {
		c.fails(exitRejected, []string{"pulse: NOT_FOUND: schedule 01JDQ5V9M3K2X8Y7Z6W5T4R3Q2 not found"},
			"schedule", "get", "01JDQ5V9M3K2X8Y7Z6W5T4R3Q2")
		c.fails(exitRejected, []string{"INVALID_ARGUMENT", `schedule_id "nope" is invalid`}, "schedule", "pause", "nope")
		c.fails(exitRejected, []string{"INVALID_ARGUMENT", `misfire_policy "sometimes" is invalid`, "run_latest, skip or run_all"},
			"schedule", "create", "--handler", "pulse.log", "--interval", "60", "--misfire-policy", "sometimes")
		c.fails(exitRejected, []string{"INVALID_ARGUMENT", "max_retries 99 is invalid"},
			"schedule", "create", "--handler", "pulse.log", "--interval", "60", "--max-retries", "99")
		c.fails(exitRejected, []string{"INVALID_ARGUMENT", `handler_name "pulse.nope" is invalid`},
			"schedule", "create", "--handler", "pulse.nope", "--interval", "60")
		wrong := runner{t: t, bin: c.bin, env: []string{"PULSE_ADDR=" + srv.GRPCAddr(), "PULSE_TOKEN=wrong"}}
		wrong.fails(exitRejected, []string{"UNAUTHENTICATED"}, "schedule", "get", "01JDQ5V9M3K2X8Y7Z6W5T4R3Q2")
	})

	t.Run("invalid command lines exit 2", func(t *testing.T) {
		create := []string{"schedule", "create", "--handler", "pulse.log"}
		cases := []struct {
			args []string
			want []string
		}{
			{append(create, "--interval", "soon"), []string{`--interval "soon" is invalid`, "whole seconds"}},
			{append(create, "--interval", "1.5s"), []string{`--interval "1.5s" is invalid`, "whole number of seconds"}},
			{append(create, "--interval", "0"), []string{`--interval "0" is invalid`, "positive"}},
			{append(create, "--interval", "60", "--handler-timeout", "500ms"), []string{`--handler-timeout "500ms" is invalid`}},
			{append(create, "--interval", "60", "--misfire-window", "x"), []string{`--misfire-window "x" is invalid`}},
			{append(create, "--interval", "60", "--start-at", "tomorrow"), []string{`--start-at "tomorrow" is invalid`, "RFC 3339"}},
			{append(create, "--interval", "60", "--max-retries", "many"), []string{"--max-retries"}},
			{append(create, "--interval", "60", "--payload", "a", "--payload-file", "-"), []string{"--payload", "--payload-file"}},
			{append(create, "--interval", "60", "--payload-file", "/nonexistent/payload"), []string{"read payload file", "/nonexistent/payload"}},
			{[]string{"schedule", "create", "--interval", "60"}, []string{"--handler"}},
			{[]string{"schedule", "get"}, []string{"schedule-id"}},
			{[]string{"schedule", "get", "x", "--output", "yaml"}, []string{"--output", "yaml"}},
		}
		for _, tc := range cases {
			c.fails(exitUsage, tc.want, tc.args...)
		}
		noToken := runner{t: t, bin: c.bin, env: []string{"PULSE_ADDR=" + srv.GRPCAddr()}}
		noToken.fails(exitUsage, []string{"no token", "PULSE_TOKEN"}, "schedule", "get", "01JDQ5V9M3K2X8Y7Z6W5T4R3Q2")
		badAddr := runner{t: t, bin: c.bin, env: []string{"PULSE_ADDR=http://" + srv.GRPCAddr(), "PULSE_TOKEN=" + cliToken}}
		badAddr.fails(exitUsage, []string{"invalid --addr", "http://"}, "schedule", "get", "01JDQ5V9M3K2X8Y7Z6W5T4R3Q2")
	})

	t.Run("unreachable API exits 3", func(t *testing.T) {
		port, err := redistest.FreePort()
		require.NoError(t, err)
		down := runner{t: t, bin: c.bin, env: []string{"PULSE_ADDR=" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), "PULSE_TOKEN=" + cliToken}}
		down.fails(exitUnavailable, []string{"call to 127.0.0.1:" + strconv.Itoa(port) + " failed", "Unavailable"},
			"schedule", "--timeout", "2s", "get", "01JDQ5V9M3K2X8Y7Z6W5T4R3Q2")
	})

	t.Run("help lists the exit codes", func(t *testing.T) {
		out := c.ok("", "schedule", "--help")
		require.Contains(t, out, "Exit codes: 0 success; 1 Pulse rejected the request")
		create := c.ok("", "schedule", "create", "--help")
		for _, flag := range []string{"--handler-timeout", "--max-retries", "--pause-after-failures", "--misfire-policy",
			"--misfire-window", "--overlap-policy", "--start-at", "--payload-file", "--metadata"} {
			require.Contains(t, create, flag)
		}
	})
}

// TestServeDevEndpoint checks the settings of the development plugin's
// endpoint, which exit before anything listens.
func TestServeDevEndpoint(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the pulse binary")
	}
	port := func() string {
		p, err := redistest.FreePort()
		require.NoError(t, err)
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	}
	c := runner{t: t, bin: proctest.Binary(t), env: []string{"PULSE_GRPC_ADDR=" + port(), "PULSE_HTTP_ADDR=" + port()}}
	c.fails(exitUsage, []string{`endpoint "http://127.0.0.1:7600" is invalid`}, "serve", "--dev-endpoint", "http://127.0.0.1:7600")
	c.fails(exitUsage, []string{"--dev-endpoint (PULSE_DEV_ENDPOINT) applies only to the development plugin"},
		"serve", "--dev-endpoint", "127.0.0.1:7600", "--plugins-file", filepath.Join(t.TempDir(), "plugins.yaml"))
}
