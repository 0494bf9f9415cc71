package api

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRegistryLoad(t *testing.T) {
	r := newTestRegistry(t)

	t.Run("size", func(t *testing.T) {
		plugins, admins := r.Size()
		require.Equal(t, 2, plugins)
		require.Equal(t, 1, admins)
	})

	t.Run("plugin lookup", func(t *testing.T) {
		p, ok := r.Plugin("beta")
		require.True(t, ok)
		require.Equal(t, &Plugin{ATSCode: "beta", Endpoint: betaEndpoint}, p)

		_, ok = r.Plugin("gamma")
		require.False(t, ok)
	})

	t.Run("plugin token", func(t *testing.T) {
		principal, ok := r.Authenticate(alphaToken)
		require.True(t, ok)
		require.False(t, principal.IsAdmin())
		require.NotNil(t, principal.Plugin)
		require.Equal(t, "alpha", principal.Plugin.ATSCode)
		require.Equal(t, alphaEndpoint, principal.Plugin.Endpoint)
	})

	t.Run("admin token", func(t *testing.T) {
		principal, ok := r.Authenticate(adminToken)
		require.True(t, ok)
		require.True(t, principal.IsAdmin())
		require.Equal(t, "ops", principal.AdminName)
		require.Nil(t, principal.Plugin)
	})

	t.Run("unknown token", func(t *testing.T) {
		principal, ok := r.Authenticate("no-such-token")
		require.False(t, ok)
		require.Equal(t, Principal{}, principal)
	})

	t.Run("digest as token rejected", func(t *testing.T) {
		_, ok := r.Authenticate(TokenDigest(alphaToken))
		require.False(t, ok, "the stored digest must not work as a token")
	})

	t.Run("empty token rejected", func(t *testing.T) {
		_, ok := r.Authenticate("")
		require.False(t, ok)
	})
}

func TestRegistryParse(t *testing.T) {
	digest := func(token string) string { return TokenDigest(token) }
	plugin := func(code, token string) string {
		return fmt.Sprintf("  - ats_code: %s\n    token_sha256: %s\n", code, digest(token))
	}

	rejected := []struct {
		name string
		yaml string
		// want lists parts of the error message.
		want []string
	}{
		{"unknown top-level field", "plugin:\n" + plugin("alpha", "a"), []string{"plugin"}},
		{"unknown plugin field", "plugins:\n" + plugin("alpha", "a") + "    token: secret\n", []string{"token"}},
		{"unknown admin field", fmt.Sprintf("admins:\n  - name: ops\n    token_sha256: %s\n    role: root\n", digest("a")), []string{"role"}},
		{"ats_code uppercase", "plugins:\n" + plugin("Alpha", "a"), []string{"plugins[0]", `ats_code "Alpha"`, "lowercase"}},
		{"ats_code leading dash", "plugins:\n" + plugin("-alpha", "a"), []string{`ats_code "-alpha"`}},
		{"ats_code empty", "plugins:\n  - token_sha256: " + digest("a") + "\n", []string{`ats_code ""`}},
		{"ats_code too long", "plugins:\n" + plugin(strings.Repeat("a", 65), "a"), []string{"ats_code", "1 to 64"}},
		{"digest too short", "plugins:\n  - ats_code: alpha\n    token_sha256: abc123\n", []string{`plugin "alpha"`, "64 hex characters", "got 6"}},
		{"digest not hex", "plugins:\n  - ats_code: alpha\n    token_sha256: " + strings.Repeat("g", 64) + "\n", []string{"token_sha256", "64 hex characters"}},
		{"digest missing", "plugins:\n  - ats_code: alpha\n", []string{"token_sha256", "got 0"}},
		{"admin digest bad", "admins:\n  - name: ops\n    token_sha256: xyz\n", []string{`admin "ops"`, "token_sha256"}},
		{"duplicate digest", "plugins:\n" + plugin("alpha", "same") + plugin("beta", "same"), []string{`plugin "beta"`, `already used by plugin "alpha"`}},
		{"duplicate digest across cases", "plugins:\n" + plugin("alpha", "same") +
			"  - ats_code: beta\n    token_sha256: " + strings.ToUpper(digest("same")) + "\n", []string{"already used"}},
		{"duplicate digest plugin and admin", "plugins:\n" + plugin("alpha", "same") +
			"admins:\n  - name: ops\n    token_sha256: " + digest("same") + "\n", []string{`admin "ops"`, "already used"}},
		{"duplicate ats_code", "plugins:\n" + plugin("alpha", "a") + plugin("alpha", "b"), []string{"plugins[1]", `ats_code "alpha" is listed twice`}},
		{"admin name missing", "admins:\n  - token_sha256: " + digest("a") + "\n", []string{"admins[0]", "name is missing"}},
		{"invalid YAML", "plugins: [", []string{"invalid YAML"}},
		{"plugins not a list", "plugins: alpha\n", []string{"invalid YAML"}},
	}
	for _, tc := range rejected {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRegistry()
			err := r.Load([]byte(tc.yaml))
			require.Error(t, err)
			for _, part := range tc.want {
				require.Contains(t, err.Error(), part)
			}
			plugins, admins := r.Size()
			require.Zero(t, plugins)
			require.Zero(t, admins)
		})
	}

	empty := []struct {
		name string
		yaml string
	}{
		{"empty file", ""},
		{"comments only", "# no plugins yet\n"},
		{"empty lists", "plugins: []\nadmins: []\n"},
	}
	for _, tc := range empty {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestRegistry(t)
			require.NoError(t, r.Load([]byte(tc.yaml)))

			plugins, admins := r.Size()
			require.Zero(t, plugins)
			require.Zero(t, admins)
			_, ok := r.Authenticate(alphaToken)
			require.False(t, ok)
		})
	}

	t.Run("uppercase digest accepted", func(t *testing.T) {
		r := NewRegistry()
		yaml := "plugins:\n  - ats_code: alpha\n    token_sha256: " + strings.ToUpper(digest(alphaToken)) + "\n"
		require.NoError(t, r.Load([]byte(yaml)))

		principal, ok := r.Authenticate(alphaToken)
		require.True(t, ok)
		require.Equal(t, "alpha", principal.Plugin.ATSCode)
	})

	t.Run("plugin without endpoint", func(t *testing.T) {
		r := NewRegistry()
		require.NoError(t, r.Load([]byte("plugins:\n"+plugin("alpha", alphaToken))))

		p, ok := r.Plugin("alpha")
		require.True(t, ok)
		require.Empty(t, p.Endpoint)
	})
}

func TestRegistryReload(t *testing.T) {
	t.Run("error keeps old contents", func(t *testing.T) {
		r := newTestRegistry(t)

		require.Error(t, r.Load([]byte("plugins:\n  - ats_code: Bad\n")))

		principal, ok := r.Authenticate(alphaToken)
		require.True(t, ok)
		require.Equal(t, "alpha", principal.Plugin.ATSCode)
		plugins, admins := r.Size()
		require.Equal(t, 2, plugins)
		require.Equal(t, 1, admins)
	})

	t.Run("half-valid file keeps old contents", func(t *testing.T) {
		r := newTestRegistry(t)
		yaml := fmt.Sprintf("plugins:\n  - ats_code: gamma\n    token_sha256: %s\n  - ats_code: Bad\n", TokenDigest("gamma-token"))

		require.Error(t, r.Load([]byte(yaml)))

		_, ok := r.Authenticate("gamma-token")
		require.False(t, ok, "a plugin of a rejected file must not authenticate")
		_, ok = r.Plugin("gamma")
		require.False(t, ok)
	})

	t.Run("success replaces contents", func(t *testing.T) {
		r := newTestRegistry(t)
		yaml := fmt.Sprintf("plugins:\n  - ats_code: gamma\n    token_sha256: %s\n", TokenDigest("gamma-token"))

		require.NoError(t, r.Load([]byte(yaml)))

		_, ok := r.Authenticate(alphaToken)
		require.False(t, ok, "a removed plugin must no longer authenticate")
		_, ok = r.Authenticate(adminToken)
		require.False(t, ok, "a removed admin must no longer authenticate")
		principal, ok := r.Authenticate("gamma-token")
		require.True(t, ok)
		require.Equal(t, "gamma", principal.Plugin.ATSCode)
	})

	t.Run("file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "plugins.yaml")
		require.NoError(t, os.WriteFile(path, testRegistryYAML(), 0o600))

		r := NewRegistry()
		require.NoError(t, r.LoadFile(path))
		_, ok := r.Authenticate(betaToken)
		require.True(t, ok)
	})

	t.Run("missing file keeps old contents", func(t *testing.T) {
		r := newTestRegistry(t)
		err := r.LoadFile(filepath.Join(t.TempDir(), "missing.yaml"))
		require.ErrorContains(t, err, "read plugins file")

		_, ok := r.Authenticate(alphaToken)
		require.True(t, ok)
	})

	t.Run("file error names path", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "plugins.yaml")
		require.NoError(t, os.WriteFile(path, []byte("plugin: []\n"), 0o600))

		err := NewRegistry().LoadFile(path)
		require.ErrorContains(t, err, path)
	})

	t.Run("concurrent with authenticate", func(t *testing.T) {
		r := newTestRegistry(t)
		other := []byte(fmt.Sprintf("plugins:\n  - ats_code: alpha\n    token_sha256: %s\n", TokenDigest(alphaToken)))

		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				if i%2 == 0 {
					_ = r.Load(other)
				} else {
					_ = r.Load(testRegistryYAML())
				}
			}
		}()
		for i := 0; i < 200; i++ {
			principal, ok := r.Authenticate(alphaToken)
			require.True(t, ok, "alpha is in both versions of the file")
			require.Equal(t, "alpha", principal.Plugin.ATSCode)
		}
		wg.Wait()
	})
}

func TestTokenDigest(t *testing.T) {
	// The widely published SHA-256 test vector for "abc".
	require.Equal(t, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", TokenDigest("abc"))
}
