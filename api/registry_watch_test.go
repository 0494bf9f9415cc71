package api

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/internal/metrics"
)

// recordingHandler keeps the messages of the log records it handles.
type recordingHandler struct {
	mu      sync.Mutex
	records []string
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, b.String())
	return nil
}

func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

// count returns how many records contain all parts.
func (h *recordingHandler) count(parts ...string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.records {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(r, p)
		}
		if all {
			n++
		}
	}
	return n
}

func (h *recordingHandler) all() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.records, "\n")
}

// replaceFile writes data to path the way editors and configuration tools
// do: into a new file that is then renamed over the old one.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, data, 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

func pluginYAML(atsCode, token string) []byte {
	return []byte(fmt.Sprintf("plugins:\n  - ats_code: %s\n    token_sha256: %s\n", atsCode, TokenDigest(token)))
}

func authenticates(r *Registry, token string) bool {
	_, ok := r.Authenticate(token)
	return ok
}

func TestRegistryFileWatch(t *testing.T) {
	const wait = 5 * time.Second
	dir := t.TempDir()
	path := filepath.Join(dir, "plugins.yaml")
	require.NoError(t, os.WriteFile(path, pluginYAML("alpha", "token-1"), 0o600))

	logs := &recordingHandler{}
	registry := NewRegistry()
	m := metrics.NewUnregistered()
	file := NewRegistryFile(registry, path, slog.New(logs), m)
	require.NoError(t, file.Load())
	require.True(t, authenticates(registry, "token-1"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, file.Watch(ctx))

	// A rotated token, written by renaming a new file over the old one.
	replaceFile(t, path, pluginYAML("alpha", "token-2"))
	require.Eventually(t, func() bool { return authenticates(registry, "token-2") }, wait, 10*time.Millisecond, logs.all())
	require.False(t, authenticates(registry, "token-1"), "the old token still works")
	require.Equal(t, 1, logs.count("plugin registry reloaded", "trigger=file change", "plugins=1"))

	// A plugin removed, written in place.
	require.NoError(t, os.WriteFile(path, []byte("plugins: []\n"), 0o600))
	require.Eventually(t, func() bool { return !authenticates(registry, "token-2") }, wait, 10*time.Millisecond, logs.all())

	// A malformed file is rejected and the previous registry kept.
	replaceFile(t, path, pluginYAML("gamma", "token-3"))
	require.Eventually(t, func() bool { return authenticates(registry, "token-3") }, wait, 10*time.Millisecond, logs.all())
	replaceFile(t, path, []byte("plugins:\n  - ats_code: Gamma\n"))
	require.Eventually(t, func() bool {
		return logs.count("plugin registry reload failed, keeping the previous one", "ats_code \"Gamma\" is invalid") == 1
	}, wait, 10*time.Millisecond, logs.all())
	require.True(t, authenticates(registry, "token-3"), "the last good registry was dropped")

	// Changes to other files of the directory neither reload nor log again.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "other.txt"), []byte("x"), 0o600))
	require.Never(t, func() bool {
		return logs.count("plugin registry reload failed") > 1
	}, 500*time.Millisecond, 20*time.Millisecond, logs.all())

	// A removed file is an error too, and its return a reload.
	require.NoError(t, os.Remove(path))
	require.Eventually(t, func() bool {
		return logs.count("plugin registry reload failed", "no such file") == 1
	}, wait, 10*time.Millisecond, logs.all())
	require.True(t, authenticates(registry, "token-3"))
	replaceFile(t, path, pluginYAML("gamma", "token-4"))
	require.Eventually(t, func() bool { return authenticates(registry, "token-4") }, wait, 10*time.Millisecond, logs.all())

	// A forced reload (SIGHUP) reloads and logs even without a change.
	before := logs.count("plugin registry reloaded", "trigger=SIGHUP")
	file.Reload(TriggerSignal, true)
	require.Equal(t, before+1, logs.count("plugin registry reloaded", "trigger=SIGHUP"))

	// Every reload is counted by its result.
	require.Equal(t, float64(logs.count("plugin registry reloaded")), testutil.ToFloat64(m.RegistryReloads.WithLabelValues(metrics.ReloadSuccess)))
	require.Equal(t, float64(logs.count("plugin registry reload failed")), testutil.ToFloat64(m.RegistryReloads.WithLabelValues(metrics.ReloadFailure)))
	require.Positive(t, testutil.ToFloat64(m.RegistryLastReloadSuccess))
}

func TestRegistryFileWatchMissingDirectory(t *testing.T) {
	file := NewRegistryFile(NewRegistry(), filepath.Join(t.TempDir(), "gone", "plugins.yaml"), slog.New(&recordingHandler{}), metrics.NewUnregistered())
	require.ErrorContains(t, file.Load(), "read plugins file")
	require.ErrorContains(t, file.Watch(context.Background()), "watch directory")
}
