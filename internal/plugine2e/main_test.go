// Package plugine2e tests plugins that serve their own handlers: in this
// process against a real redis-server (outcomes, retries, isolation of
// misbehaving plugins), and as separate processes with the real pulse binary
// and the example plugin.
package plugine2e

import (
	"os"
	"testing"

	"github.com/pulse-sched/pulse/internal/proctest"
)

func TestMain(m *testing.M) {
	os.Exit(proctest.Main(m))
}
