package api

import (
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/internal/metrics"
	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/store"
)

// Tokens of the plugins that the handler rules apply to.
const (
	bareToken    = "bare-token-0123456789"    // no endpoint
	limitedToken = "limited-token-0123456789" // endpoint and a handlers list
)

func TestCreateHandlerRules(t *testing.T) {
	rdb := redistest.Start(t).Client()
	st, err := store.New(rdb, store.Config{Prefix: "handlertest", Partitions: 2})
	require.NoError(t, err)
	require.NoError(t, st.Init(testContext(t)))
	registry := NewRegistry()
	require.NoError(t, registry.Load([]byte(fmt.Sprintf(`plugins:
  - ats_code: bare
    token_sha256: %s
  - ats_code: limited
    token_sha256: %s
    endpoint: grpcs://limited.plugins.internal:443
    handlers: [sync.accounts, pulse.log]
admins:
  - name: ops
    token_sha256: %s
`, TokenDigest(bareToken), TokenDigest(limitedToken), TokenDigest(adminToken)))))
	svc, err := NewService(st, registry, Config{LocalHandlers: []string{"local.cleanup"}},
		slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.NewUnregistered())
	require.NoError(t, err)

	cases := []struct {
		name, token, atsCode, handler string
		// code is the expected error code, empty for success.
		code ErrorCode
		want []string
	}{
		{name: "built-in without endpoint", token: bareToken, handler: "pulse.log"},
		{name: "pulse.sleep without endpoint", token: bareToken, handler: "pulse.sleep"},
		{name: "local handler without endpoint", token: bareToken, handler: "local.cleanup"},
		{name: "plugin handler without endpoint", token: bareToken, handler: "sync.accounts", code: CodeInvalidArgument,
			want: []string{`handler_name "sync.accounts" cannot run`, `plugin "bare" has no endpoint`, "pulse.log, pulse.sleep"}},
		{name: "admin for a plugin without endpoint", token: adminToken, atsCode: "bare", handler: "sync.accounts", code: CodeInvalidArgument,
			want: []string{`plugin "bare" has no endpoint`}},
		{name: "reserved prefix", token: limitedToken, handler: "pulse.unknown", code: CodeInvalidArgument,
			want: []string{`handler_name "pulse.unknown" is invalid`, `"pulse." are reserved`}},
		{name: "listed handler", token: limitedToken, handler: "sync.accounts"},
		{name: "listed built-in", token: limitedToken, handler: "pulse.log"},
		{name: "unlisted handler", token: limitedToken, handler: "sync.invoices", code: CodePermissionDenied,
			want: []string{`handler_name "sync.invoices" is not allowed for plugin "limited"`, "allows only sync.accounts, pulse.log"}},
		{name: "unlisted built-in", token: limitedToken, handler: "pulse.sleep", code: CodePermissionDenied,
			want: []string{`"pulse.sleep" is not allowed`}},
		{name: "admin for a plugin with a list", token: adminToken, atsCode: "limited", handler: "sync.invoices", code: CodePermissionDenied,
			want: []string{`not allowed for plugin "limited"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := dbSize(t, rdb)
			req := validCreateRequest()
			req.AuthToken, req.AtsCode, req.HandlerName = tc.token, tc.atsCode, tc.handler
			resp, err := svc.CreateSchedule(testContext(t), req)
			require.NoError(t, err)
			if tc.code == "" {
				requireOK(t, resp, err)
				return
			}
			require.False(t, resp.GetSuccess())
			require.Equal(t, string(tc.code), resp.GetErrorCode(), resp.GetError())
			for _, part := range tc.want {
				require.Contains(t, resp.GetError(), part)
			}
			require.Equal(t, before, dbSize(t, rdb), "a rejected create wrote to Redis")
		})
	}

	t.Run("source_url is the endpoint", func(t *testing.T) {
		req := validCreateRequest()
		req.AuthToken, req.HandlerName = limitedToken, "sync.accounts"
		id := createSchedule(t, svc, req)
		require.Equal(t, "grpcs://limited.plugins.internal:443", getJob(t, svc, limitedToken, id).GetSourceUrl())
	})
}

func TestRegistryParsePluginFields(t *testing.T) {
	entry := func(extra string) []byte {
		return []byte(fmt.Sprintf("plugins:\n  - ats_code: alpha\n    token_sha256: %s\n%s", TokenDigest(alphaToken), extra))
	}

	t.Run("endpoints", func(t *testing.T) {
		for _, ep := range []string{"127.0.0.1:7600", "grpc://billing.internal:80", "grpcs://plugins.example:443", "[::1]:7600"} {
			require.NoError(t, NewRegistry().Load(entry("    endpoint: \""+ep+"\"\n")), ep)
		}
		for ep, want := range map[string]string{
			"https://plugins.example":  "scheme must be grpc://",
			"plugins.example":          "must be host:port",
			"127.0.0.1:99999":          "from 1 to 65535",
			"grpc://h:1/path":          "must be host:port",
			"tls://plugins.example:44": "scheme must be grpc://",
		} {
			err := NewRegistry().Load(entry("    endpoint: \"" + ep + "\"\n"))
			require.Error(t, err, ep)
			require.Contains(t, err.Error(), `plugin "alpha": endpoint "`+ep+`" is invalid`)
			require.Contains(t, err.Error(), want)
		}
	})

	t.Run("handlers", func(t *testing.T) {
		r := NewRegistry()
		require.NoError(t, r.Load(entry("    handlers: [sync.accounts, \"reports:daily\"]\n")))
		p, ok := r.Plugin("alpha")
		require.True(t, ok)
		require.Equal(t, []string{"sync.accounts", "reports:daily"}, p.Handlers)

		err := NewRegistry().Load(entry("    handlers: [\"sync accounts\"]\n"))
		require.ErrorContains(t, err, `plugin "alpha": handlers: handler_name "sync accounts" is invalid`)

		err = NewRegistry().Load(entry("    handler: [sync]\n"))
		require.ErrorContains(t, err, "endpoint and handlers in a plugin")
	})
}
