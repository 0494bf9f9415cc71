package api

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/pulse-sched/pulse/internal/metrics"
)

// The triggers of a registry reload, as logged.
const (
	TriggerFileChange = "file change"
	TriggerSignal     = "SIGHUP"
)

// watchDebounce is how long the watcher waits after the last event in the
// directory before it reads the file, so that an editor's several writes,
// renames and permission changes make one reload.
const watchDebounce = 150 * time.Millisecond

// RegistryFile keeps a Registry loaded from a plugins file. Reload reads the
// file again on request (SIGHUP), and Watch does so whenever the file
// changes. A file that fails to load leaves the previous registry in place.
type RegistryFile struct {
	registry *Registry
	path     string
	logger   *slog.Logger
	metrics  *metrics.Metrics

	mu sync.Mutex
	// seen identifies the latest contents read, loaded or rejected, so that
	// a change elsewhere in the directory neither reloads nor logs again.
	seen string
}

// NewRegistryFile returns the keeper of registry's contents from path. It
// counts each reload in m's pulse_registry_reloads_total{result}.
func NewRegistryFile(registry *Registry, path string, logger *slog.Logger, m *metrics.Metrics) *RegistryFile {
	return &RegistryFile{registry: registry, path: path, logger: logger.With("component", "api"), metrics: m}
}

// Load loads the file, returning why it failed.
func (f *RegistryFile) Load() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, err := f.load()
	return err
}

// load reads and loads the file and records what it read. The caller holds
// f.mu.
func (f *RegistryFile) load() (string, error) {
	data, err := os.ReadFile(f.path)
	if err != nil {
		err = fmt.Errorf("read plugins file: %w", err)
		f.seen = "error: " + err.Error()
		return f.seen, err
	}
	seen := fmt.Sprintf("sha256:%x", sha256.Sum256(data))
	f.seen = seen
	if err := f.registry.Load(data); err != nil {
		return seen, fmt.Errorf("plugins file %s: %w", f.path, err)
	}
	return seen, nil
}

// Reload loads the file again and logs the result. With force false it
// does nothing when the file has the contents last read.
func (f *RegistryFile) Reload(trigger string, force bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !force {
		data, err := os.ReadFile(f.path)
		current := fmt.Sprintf("sha256:%x", sha256.Sum256(data))
		if err != nil {
			current = "error: " + fmt.Errorf("read plugins file: %w", err).Error()
		}
		if current == f.seen {
			return
		}
	}
	if _, err := f.load(); err != nil {
		f.metrics.RegistryReloads.WithLabelValues(metrics.ReloadFailure).Inc()
		f.logger.Error("plugin registry reload failed, keeping the previous one",
			"path", f.path, "trigger", trigger, "error", err)
		return
	}
	f.metrics.RegistryReloads.WithLabelValues(metrics.ReloadSuccess).Inc()
	f.metrics.RegistryLastReloadSuccess.SetToCurrentTime()
	plugins, admins := f.registry.Size()
	f.logger.Info("plugin registry reloaded", "path", f.path, "trigger", trigger, "plugins", plugins, "admins", admins)
}

// Watch reloads the file whenever it changes, until ctx ends. It watches
// the file's directory rather than the file, because editors and
// configuration tools replace a file (write a new one, rename it over the
// old) instead of writing into it. It returns an error when the directory
// cannot be watched.
func (f *RegistryFile) Watch(ctx context.Context) error {
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch plugins file: %w", err)
	}
	dir := filepath.Dir(f.path)
	if err := watcher.Add(dir); err != nil {
		watcher.Close()
		return fmt.Errorf("watch directory %s of the plugins file: %w", dir, err)
	}

	go func() {
		defer watcher.Close()
		// The timer starts stopped; every event restarts it.
		debounce := time.NewTimer(time.Hour)
		debounce.Stop()
		defer debounce.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-watcher.Events:
				if !ok {
					return
				}
				debounce.Reset(watchDebounce)
			case err, ok := <-watcher.Errors:
				if !ok {
					return
				}
				f.logger.Warn("watching the plugins file failed; SIGHUP still reloads it", "path", f.path, "error", err)
			case <-debounce.C:
				f.Reload(TriggerFileChange, false)
			}
		}
	}()
	return nil
}
