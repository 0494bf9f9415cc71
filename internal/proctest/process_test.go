package proctest

import (
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEnvironDropsCallerPulseVariables(t *testing.T) {
	t.Setenv("PULSE_KEY_PREFIX", "developer")
	t.Setenv("PULSE_TOKEN", "developer-token")
	t.Setenv("PROCTEST_OTHER", "kept")

	env := environ(map[string]string{"PULSE_LOG_LEVEL": "debug"})

	require.NotContains(t, env, "PULSE_KEY_PREFIX=developer")
	require.NotContains(t, env, "PULSE_TOKEN=developer-token")
	require.Contains(t, env, "PROCTEST_OTHER=kept")
	require.Contains(t, env, "PULSE_LOG_LEVEL=debug")
	pulseVars := slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return !strings.HasPrefix(kv, "PULSE_") })
	require.Equal(t, []string{"PULSE_LOG_LEVEL=debug"}, pulseVars)
}
