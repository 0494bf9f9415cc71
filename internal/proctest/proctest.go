// Package proctest runs the real pulse binary as separate processes for
// multi-process tests.
//
// A test package that uses proctest calls Main from its TestMain. The first
// test that starts a process builds cmd/pulse once into a temporary directory
// that Main removes after the tests. Each process runs on loopback with free
// ports and its own environment: no PULSE_* variable of the caller's
// environment reaches it. Its JSON log lines are kept in memory and in a file
// under the test's temporary directory. Every process is killed when its test
// ends, and the last lines of every log are printed when the test failed.
//
//	func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }
//
//	func TestSomething(t *testing.T) {
//		redis := redistest.Start(t)
//		plugins := proctest.WritePlugins(t, "billing")
//		srv := proctest.Start(t, proctest.Options{
//			Name: "serve", Args: []string{"serve"},
//			RedisURL: redis.URL(), PluginsFile: plugins.Path,
//		})
//		srv.WaitReady(t, 20*time.Second)
//		client := srv.Client(t)
//		...
//	}
package proctest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// buildTimeout bounds the build of the pulse binary.
const buildTimeout = 5 * time.Minute

var binary struct {
	mu sync.Mutex
	// dir is the directory that Main created for the binary; empty when
	// Main is not running.
	dir  string
	once sync.Once
	path string
	err  error
}

// Main runs the tests of m and then removes the pulse binary that the tests
// built. Call it from TestMain of every package that uses proctest, and exit
// with its result.
func Main(m *testing.M) int {
	dir, err := os.MkdirTemp("", "pulse-proctest-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "proctest: create the directory of the pulse binary: %v\n", err)
		return 1
	}
	binary.mu.Lock()
	binary.dir = dir
	binary.mu.Unlock()

	code := m.Run()

	binary.mu.Lock()
	binary.dir = ""
	binary.mu.Unlock()
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintf(os.Stderr, "proctest: remove %s: %v\n", dir, err)
	}
	return code
}

// Binary returns the path of the pulse binary, building it on the first call
// of the test binary. It fails the test when Main is not running or the build
// fails.
func Binary(t testing.TB) string {
	t.Helper()
	binary.mu.Lock()
	dir := binary.dir
	binary.mu.Unlock()
	if dir == "" {
		t.Fatal("proctest: Main is not running: call os.Exit(proctest.Main(m)) from TestMain")
	}

	binary.once.Do(func() {
		binary.path, binary.err = build(dir)
	})
	if binary.err != nil {
		t.Fatalf("proctest: %v", binary.err)
	}
	return binary.path
}

// build compiles cmd/pulse into dir. It runs in the module root, found from
// the working directory, which go test sets to the test package's directory.
func build(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}

	out := filepath.Join(dir, "pulse")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", out, "./cmd/pulse")
	cmd.Dir = root
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build cmd/pulse in %s: %w\n%s", root, err, output)
	}
	return out, nil
}

// moduleRoot returns the nearest directory at or above the working directory
// that contains go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod found at or above the working directory")
		}
		dir = parent
	}
}
