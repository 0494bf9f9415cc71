// Package obstest_test checks Pulse's observability as an operator meets
// it: the metrics that a real pulse binary exports against docs/metrics.md,
// the Grafana dashboard and the Prometheus alert rules against those
// metrics, a real Prometheus scraping Pulse, and the /monitoring console,
// with curl-like requests and in headless Chromium.
//
// Tests that need an external program (promtool, prometheus, chromium) skip
// when it is missing, unless PULSE_REQUIRE_TOOLS is set, as CI does: then
// they fail.
package obstest_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/pulse-sched/pulse/api"
	"github.com/pulse-sched/pulse/internal/proctest"
	"github.com/pulse-sched/pulse/proto/protocolpb"
)

func TestMain(m *testing.M) {
	os.Exit(proctest.Main(m))
}

const (
	// rpcTimeout bounds each gRPC call.
	rpcTimeout = 5 * time.Second
	// readyTimeout bounds the start of a pulse process.
	readyTimeout = 30 * time.Second
	// requireToolsEnv, when set, turns the skip of a test whose program is
	// missing into a failure.
	requireToolsEnv = "PULSE_REQUIRE_TOOLS"
)

// requireTool returns the path of program name. When it is missing, the
// test skips, or fails if PULSE_REQUIRE_TOOLS is set.
func requireTool(t *testing.T, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("%s is not installed (Debian: apt-get install %s)", name, debianPackage)
	if os.Getenv(requireToolsEnv) != "" {
		t.Fatalf("%s, and %s is set", msg, requireToolsEnv)
	}
	t.Skip(msg)
	return ""
}

// repoPath returns the path of a file of the repository, from this file's
// location.
func repoPath(t testing.TB, rel string) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	require.True(t, ok, "locate the test source")
	return filepath.Join(filepath.Dir(file), "..", "..", filepath.FromSlash(rel))
}

// registry is a plugins file with one plugin and one admin.
type registry struct {
	Path        string
	ATSCode     string
	PluginToken string
	AdminToken  string
	contents    string
}

func newToken(t testing.TB, prefix string) string {
	t.Helper()
	b := make([]byte, 16)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return prefix + hex.EncodeToString(b)
}

// writeRegistry writes a plugins file with the plugin "obs" and the admin
// "sre", each with a new random token. The plugin's endpoint is a loopback
// port where nothing listens, so that handlers that no worker registers may
// be scheduled, and each of their calls fails at once.
func writeRegistry(t testing.TB) registry {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	endpoint := lis.Addr().String()
	require.NoError(t, lis.Close())
	r := registry{
		Path:        filepath.Join(t.TempDir(), "plugins.yaml"),
		ATSCode:     "obs",
		PluginToken: newToken(t, "plugin-"),
		AdminToken:  newToken(t, "admin-"),
	}
	r.contents = fmt.Sprintf("plugins:\n  - ats_code: %s\n    token_sha256: %q\n    endpoint: %q\nadmins:\n  - name: sre\n    token_sha256: %q\n",
		r.ATSCode, api.TokenDigest(r.PluginToken), endpoint, api.TokenDigest(r.AdminToken))
	replaceFile(t, r.Path, r.contents)
	return r
}

// replaceFile writes contents to path through a new file renamed over the
// old one, so that a process watching the file never reads it half written.
func replaceFile(t testing.TB, path, contents string) {
	t.Helper()
	tmp := path + ".new"
	require.NoError(t, os.WriteFile(tmp, []byte(contents), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

// create creates a schedule with the plugin's token and returns its ID.
func create(t testing.TB, client protocolpb.ScheduleServiceClient, token string, req *protocolpb.CreateScheduleRequest) string {
	t.Helper()
	req = proto.Clone(req).(*protocolpb.CreateScheduleRequest)
	req.AuthToken = token
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	resp, err := client.CreateSchedule(ctx, req)
	require.NoError(t, err)
	require.Truef(t, resp.GetSuccess(), "CreateSchedule failed: %s: %s", resp.GetErrorCode(), resp.GetError())
	return resp.GetScheduleId()
}

func pause(t testing.TB, client protocolpb.ScheduleServiceClient, token, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	resp, err := client.PauseSchedule(ctx, &protocolpb.PauseScheduleRequest{AuthToken: token, ScheduleId: id})
	require.NoError(t, err)
	require.Truef(t, resp.GetSuccess(), "PauseSchedule %s failed: %s: %s", id, resp.GetErrorCode(), resp.GetError())
}

func remove(t testing.TB, client protocolpb.ScheduleServiceClient, token, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	resp, err := client.DeleteSchedule(ctx, &protocolpb.DeleteScheduleRequest{AuthToken: token, ScheduleId: id})
	require.NoError(t, err)
	require.Truef(t, resp.GetSuccess(), "DeleteSchedule %s failed: %s: %s", id, resp.GetErrorCode(), resp.GetError())
}

// scrape reads /metrics of p and parses it. It fails the test, so call it
// from the test's goroutine only; conditions of require.Eventually use
// tryScrape.
func scrape(t testing.TB, p *proctest.Process) map[string]*dto.MetricFamily {
	t.Helper()
	families, err := tryScrape(p)
	require.NoError(t, err)
	return families
}

// tryScrape reads /metrics of p and parses it.
func tryScrape(p *proctest.Process) (map[string]*dto.MetricFamily, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + p.HTTPAddr() + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics of %s: status %d", p.Name(), resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse /metrics of %s: %w", p.Name(), err)
	}
	return families, nil
}

// value returns the value of the sample of family name whose labels include
// labels (name, value pairs), summed over every matching sample: a counter's
// or gauge's value, a histogram's sample count. found is false when no
// sample matches.
func value(families map[string]*dto.MetricFamily, name string, labels ...string) (sum float64, found bool) {
	f, ok := families[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		case m.Summary != nil:
			sum += float64(m.GetSummary().GetSampleCount())
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum, found
}

func hasLabels(m *dto.Metric, pairs []string) bool {
	for i := 0; i+1 < len(pairs); i += 2 {
		matched := false
		for _, l := range m.GetLabel() {
			if l.GetName() == pairs[i] && l.GetValue() == pairs[i+1] {
				matched = true
				break
			}
		}
		if !matched {
			return false
		}
	}
	return true
}

// mustValue is value for a sample that must exist.
func mustValue(t testing.TB, families map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	v, found := value(families, name, labels...)
	require.Truef(t, found, "no sample of %s with labels %v", name, labels)
	return v
}

// seriesNames returns every series name of a scrape: a counter's or gauge's
// name, and a histogram's or summary's _bucket or quantile series, _sum and
// _count.
func seriesNames(families map[string]*dto.MetricFamily) map[string]*dto.MetricFamily {
	names := map[string]*dto.MetricFamily{}
	for name, f := range families {
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM:
			names[name+"_bucket"] = f
			names[name+"_sum"] = f
			names[name+"_count"] = f
		case dto.MetricType_SUMMARY:
			names[name] = f
			names[name+"_sum"] = f
			names[name+"_count"] = f
		default:
			names[name] = f
		}
	}
	return names
}

// startServe starts "pulse serve" on a new redis-server with a registry of
// one plugin and one admin, and waits until it is ready.
func startServe(t *testing.T, redisURL string, reg registry, env map[string]string) *proctest.Process {
	t.Helper()
	p := proctest.Start(t, proctest.Options{
		Name: "serve", Args: []string{"serve"},
		RedisURL: redisURL, PluginsFile: reg.Path, Env: env,
	})
	p.WaitReady(t, readyTimeout)
	return p
}
