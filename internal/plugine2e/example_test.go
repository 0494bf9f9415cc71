package plugine2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/api"
	"github.com/pulse-sched/pulse/client"
	"github.com/pulse-sched/pulse/internal/proctest"
	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/store"
)

// TestExamplePlugin runs pulse serve and the example plugin as separate
// processes: the plugin creates its two schedules at start, every slot
// calls its handler once with the schedule's payload and metadata, and
// GetSchedule reports the outcome. When the plugin stops it deletes them.
func TestExamplePlugin(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs pulse and the example plugin for about 10 seconds")
	}
	const (
		token    = "example-plugin-token"
		interval = time.Second
		runs     = 3 // executions to see per schedule
	)
	redis := redistest.Start(t)
	pluginAddr := freeAddr(t)
	pluginsFile := filepath.Join(t.TempDir(), "plugins.yaml")
	writePlugins(t, pluginsFile, pluginEntry("example", token, pluginAddr))

	srv := proctest.Start(t, proctest.Options{
		Name: "serve", Args: []string{"serve"}, RedisURL: redis.URL(), PluginsFile: pluginsFile,
	})
	srv.WaitReady(t, 30*time.Second)
	plugin := startCommand(t, "example plugin", proctest.BuildPackage(t, "./examples/plugin"),
		[]string{"PULSE_TOKEN=" + token},
		"--listen", pluginAddr, "--pulse-addr", srv.GRPCAddr(), "--interval", interval.String(), "--log-format", "json")

	// What the example schedules, by handler.
	want := map[string]struct {
		payload  string
		metadata map[string]any
	}{
		"example.greet": {"world", map[string]any{"language": "en"}},
		"example.count": {"[1, 2, 3]", map[string]any{"unit": "items"}},
	}
	require.True(t, assertEventually(func() bool { return len(plugin.withMsg("schedule created")) == len(want) }),
		"the example plugin did not create its schedules")
	handlerOf := map[string]string{} // schedule ID to handler
	for _, l := range plugin.withMsg("schedule created") {
		handlerOf[l["schedule_id"].(string)] = l["handler"].(string)
	}

	runsOf := func(id string) []map[string]any {
		var out []map[string]any
		for _, l := range plugin.withMsg("handler ran") {
			if l["schedule_id"] == id {
				out = append(out, l)
			}
		}
		return out
	}
	require.True(t, assertEventually(func() bool {
		for id := range handlerOf {
			if len(runsOf(id)) < runs {
				return false
			}
		}
		return true
	}), "the schedules did not run %d times each", runs)

	pulse := newClient(t, srv.GRPCAddr(), token)
	ctx := context.Background()
	for id, handler := range handlerOf {
		job, err := pulse.Get(ctx, id)
		require.NoError(t, err)
		createdAt, err := time.Parse(api.TimeFormat, job.GetCreatedAt())
		require.NoError(t, err)
		sum := sha256.Sum256([]byte(want[handler].payload))

		seen := map[string]bool{}
		for i, l := range runsOf(id) {
			slot, err := time.Parse(time.RFC3339Nano, l["slot"].(string))
			require.NoError(t, err)
			// run_immediately: the first slot is the creation time, and each
			// slot follows the one before by one interval.
			require.Equal(t, createdAt.Add(time.Duration(i)*interval), slot, "%s: slot of run %d", handler, i)
			executionID := l["execution_id"].(string)
			require.Equal(t, store.SlotRef{ScheduleID: id, Slot: slot}.ExecutionID(), executionID, "%s: execution ID of slot %s", handler, slot)
			require.False(t, seen[executionID], "%s: execution %s ran twice", handler, executionID)
			seen[executionID] = true
			require.Equal(t, handler, l["handler"])
			require.EqualValues(t, 0, l["attempt"])
			require.Equal(t, hex.EncodeToString(sum[:]), l["payload_sha256"], "%s: payload", handler)
			require.Equal(t, want[handler].metadata, l["metadata"], "%s: metadata", handler)
		}

		job, err = pulse.Get(ctx, id)
		require.NoError(t, err)
		if job.GetLastStatus() == "running" {
			// The latest slot is under way; its outcome follows at once.
			require.True(t, assertEventually(func() bool {
				job, err = pulse.Get(ctx, id)
				return err == nil && job.GetLastStatus() != "running"
			}))
		}
		require.Equal(t, "succeeded", job.GetLastStatus(), handler)
		require.Empty(t, job.GetLastError(), handler)
		require.Zero(t, job.GetConsecutiveFailures(), handler)
		require.GreaterOrEqual(t, job.GetTotalRuns(), int64(runs), handler)
		require.Equal(t, pluginAddr, job.GetSourceUrl(), handler)
		require.True(t, assertEventually(func() bool { return len(runsOf(id)) >= int(job.GetTotalRuns()) }),
			"%s: GetSchedule counts %d runs, the plugin saw %d", handler, job.GetTotalRuns(), len(runsOf(id)))
	}

	// Stopping the plugin deletes its schedules.
	plugin.terminate(t)
	require.Zero(t, plugin.wait(t, 15*time.Second), "exit code of the example plugin")
	for id := range handlerOf {
		job, err := pulse.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, "deleted", job.GetState())
	}
}

// TestRegistryReloadsWithoutRestart changes the plugins file of a running
// API: a rotated token, a removed plugin and a malformed file take effect,
// or are rejected, without a restart, and SIGHUP reloads the file too.
func TestRegistryReloadsWithoutRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the pulse API as a process")
	}
	redis := redistest.Start(t)
	path := filepath.Join(t.TempDir(), "plugins.yaml")
	writePlugins(t, path, pluginEntry("alpha", "alpha-token-1", ""), pluginEntry("beta", "beta-token-1", ""))
	apiProcess := proctest.Start(t, proctest.Options{
		Name: "api", Args: []string{"api"}, RedisURL: redis.URL(), PluginsFile: path,
	})
	apiProcess.WaitReady(t, 30*time.Second)
	ctx := context.Background()
	id, err := newClient(t, apiProcess.GRPCAddr(), "alpha-token-1").Create(ctx, client.ScheduleSpec{Handler: "pulse.log", Interval: time.Hour})
	require.NoError(t, err)
	works := func(token string) error {
		_, err := newClient(t, apiProcess.GRPCAddr(), token).Get(ctx, id)
		return err
	}

	// Rotate alpha's token.
	writePlugins(t, path, pluginEntry("alpha", "alpha-token-2", ""), pluginEntry("beta", "beta-token-1", ""))
	require.True(t, assertEventually(func() bool { return works("alpha-token-2") == nil }), "the new token does not work")
	require.ErrorIs(t, works("alpha-token-1"), client.ErrUnauthenticated)
	apiProcess.WaitLog(t, 5*time.Second, "reload line", func(l proctest.Line) bool {
		return l.Msg() == "plugin registry reloaded" && l.String("trigger") == api.TriggerFileChange
	})

	// Remove beta.
	require.ErrorIs(t, works("beta-token-1"), client.ErrNotFound, "beta sees alpha's schedule")
	writePlugins(t, path, pluginEntry("alpha", "alpha-token-2", ""))
	require.True(t, assertEventually(func() bool { return errors.Is(works("beta-token-1"), client.ErrUnauthenticated) }),
		"the removed plugin's token still works")

	// A malformed file is rejected, and the last good registry stays.
	writePlugins(t, path, "  - ats_code: Alpha\n")
	apiProcess.WaitLog(t, 5*time.Second, "rejected reload", func(l proctest.Line) bool {
		return l.Msg() == "plugin registry reload failed, keeping the previous one" && l.String("trigger") == api.TriggerFileChange
	})
	require.NoError(t, works("alpha-token-2"))

	// SIGHUP reloads the file: still malformed, then fixed.
	apiProcess.Signal(t, syscall.SIGHUP)
	apiProcess.WaitLog(t, 5*time.Second, "rejected reload on SIGHUP", func(l proctest.Line) bool {
		return l.Msg() == "plugin registry reload failed, keeping the previous one" && l.String("trigger") == api.TriggerSignal
	})
	require.NoError(t, works("alpha-token-2"))
	writePlugins(t, path, pluginEntry("alpha", "alpha-token-3", ""))
	require.True(t, assertEventually(func() bool { return works("alpha-token-3") == nil }))
	apiProcess.Signal(t, syscall.SIGHUP)
	apiProcess.WaitLog(t, 5*time.Second, "reload on SIGHUP", func(l proctest.Line) bool {
		return l.Msg() == "plugin registry reloaded" && l.String("trigger") == api.TriggerSignal
	})

	for _, l := range apiProcess.Lines() {
		for _, token := range []string{"alpha-token-1", "alpha-token-2", "alpha-token-3", "beta-token-1"} {
			require.NotContains(t, l.Text, token, "a token reached the log")
		}
	}
}
