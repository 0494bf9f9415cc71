//go:build faults

package faults

import (
	"os"
	"testing"

	"github.com/pulse-sched/pulse/internal/proctest"
)

func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }
