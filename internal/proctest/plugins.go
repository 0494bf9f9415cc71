package proctest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/pulse-sched/pulse/api"
)

// Plugins is a plugins file with one plugin.
type Plugins struct {
	// Path is the file, for Options.PluginsFile.
	Path string
	// ATSCode is the plugin's ats_code.
	ATSCode string
	// Token is the plugin's token, for the auth_token of requests.
	Token string
}

// WritePlugins writes a plugins file with one plugin, atsCode, and a new
// random token into the test's temporary directory.
func WritePlugins(t testing.TB, atsCode string) Plugins {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("proctest: make a token: %v", err)
	}
	p := Plugins{
		Path:    filepath.Join(t.TempDir(), "plugins.yaml"),
		ATSCode: atsCode,
		Token:   "proctest-" + hex.EncodeToString(b),
	}
	yaml := fmt.Sprintf("plugins:\n  - ats_code: %q\n    token_sha256: %q\n", atsCode, api.TokenDigest(p.Token))
	if err := os.WriteFile(p.Path, []byte(yaml), 0o600); err != nil {
		t.Fatalf("proctest: write plugins file: %v", err)
	}
	return p
}
