package proctest

import (
	"context"
	"fmt"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// packages holds the binaries that BuildPackage built, by package path.
var packages struct {
	mu    sync.Mutex
	built map[string]*builtPackage
}

type builtPackage struct {
	once sync.Once
	path string
	err  error
}

// BuildPackage builds the main package pkg of this module, such as
// "./examples/plugin", once per test binary, and returns the binary's path.
// It lies in the directory that Main removes after the tests.
func BuildPackage(t testing.TB, pkg string) string {
	t.Helper()
	binary.mu.Lock()
	dir := binary.dir
	binary.mu.Unlock()
	if dir == "" {
		t.Fatal("proctest: Main is not running: call os.Exit(proctest.Main(m)) from TestMain")
	}

	packages.mu.Lock()
	if packages.built == nil {
		packages.built = map[string]*builtPackage{}
	}
	b, ok := packages.built[pkg]
	if !ok {
		b = &builtPackage{}
		packages.built[pkg] = b
	}
	packages.mu.Unlock()

	b.once.Do(func() {
		b.path, b.err = buildPackage(dir, pkg)
	})
	if b.err != nil {
		t.Fatalf("proctest: %v", b.err)
	}
	return b.path
}

func buildPackage(dir, pkg string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := filepath.Join(dir, "pkg-"+path.Base(pkg))
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", out, pkg)
	cmd.Dir = root
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s in %s: %w\n%s", pkg, root, err, output)
	}
	return out, nil
}
