package obstest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/proto/protocolpb"
)

// prometheusServer is a prometheus process owned by one test.
type prometheusServer struct {
	addr string
}

// startPrometheus starts the prometheus program bin on a free loopback
// port, scraping target every second with the alert rules of
// dashboards/alerts.yaml, and stops it when the test ends.
func startPrometheus(t *testing.T, bin, target string) *prometheusServer {
	t.Helper()
	dir := t.TempDir()
	port, err := redistest.FreePort()
	require.NoError(t, err)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: pulse
    static_configs:
      - targets: [%q]
`, repoPath(t, "dashboards/alerts.yaml"), target)
	configPath := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(configPath, []byte(config), 0o600))

	logPath := filepath.Join(dir, "prometheus.log")
	logFile, err := os.Create(logPath)
	require.NoError(t, err)
	cmd := exec.Command(bin,
		"--config.file="+configPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--web.console.templates="+filepath.Join(dir, "consoles"),
		"--web.console.libraries="+filepath.Join(dir, "console_libraries"),
		"--log.level=warn",
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("prometheus log:\n%s", out)
		}
	})

	p := &prometheusServer{addr: addr}
	require.Eventually(t, func() bool {
		select {
		case <-exited:
			return false
		default:
		}
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 100*time.Millisecond, "prometheus ready on %s", addr)
	return p
}

// apiResponse is the envelope of Prometheus's HTTP API.
type apiResponse struct {
	Status string          `json:"status"`
	Error  string          `json:"error"`
	Data   json.RawMessage `json:"data"`
}

// get calls a Prometheus API path and decodes its data into v.
func (p *prometheusServer) get(path string, params url.Values, v any) error {
	resp, err := http.Get("http://" + p.addr + path + "?" + params.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var r apiResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("%s: %w: %s", path, err, body)
	}
	if r.Status != "success" {
		return fmt.Errorf("%s: %s", path, r.Error)
	}
	return json.Unmarshal(r.Data, v)
}

// query runs an instant PromQL query and returns the value of its only
// sample.
func (p *prometheusServer) query(promql string) (float64, error) {
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Value [2]any `json:"value"`
		} `json:"result"`
	}
	if err := p.get("/api/v1/query", url.Values{"query": {promql}}, &data); err != nil {
		return 0, err
	}
	if len(data.Result) != 1 {
		return 0, fmt.Errorf("query %s returned %d samples", promql, len(data.Result))
	}
	s, ok := data.Result[0].Value[1].(string)
	if !ok {
		return 0, fmt.Errorf("query %s: value %v is not a string", promql, data.Result[0].Value[1])
	}
	return strconv.ParseFloat(s, 64)
}

// TestPrometheusScrapesPulse runs a real Prometheus that scrapes a pulse
// serve and loads the alert rules, and queries Pulse's metrics through its
// HTTP API.
func TestPrometheusScrapesPulse(t *testing.T) {
	if testing.Short() {
		t.Skip("runs pulse serve and prometheus for a few seconds")
	}
	bin := requireTool(t, "prometheus", "prometheus")
	redis := redistest.Start(t)
	reg := writeRegistry(t)
	srv := startServe(t, redis.URL(), reg, nil)
	client := srv.Client(t)
	for range 2 {
		create(t, client, reg.PluginToken, &protocolpb.CreateScheduleRequest{HandlerName: "pulse.log", IntervalSeconds: 3600})
	}

	prom := startPrometheus(t, bin, srv.HTTPAddr())
	queries := map[string]float64{
		`up{job="pulse"}`: 1,
		`pulse_schedules{job="pulse",state="active"}`:                                 2,
		`sum(grpc_server_handled_total{grpc_method="CreateSchedule",grpc_code="OK"})`: 2,
		`pulse_scheduler_partitions_owned`:                                            16,
	}
	for promql, want := range queries {
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			got, err := prom.query(promql)
			if assert.NoError(c, err) {
				assert.Equal(c, want, got, promql)
			}
		}, 30*time.Second, 250*time.Millisecond)
	}

	// The alert rules loaded and evaluate without error.
	var rules struct {
		Groups []struct {
			Rules []struct {
				Name   string `json:"name"`
				Health string `json:"health"`
				Error  string `json:"lastError"`
			} `json:"rules"`
		} `json:"groups"`
	}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		if !assert.NoError(c, prom.get("/api/v1/rules", nil, &rules)) || !assert.Len(c, rules.Groups, 1) {
			return
		}
		for _, r := range rules.Groups[0].Rules {
			assert.Equalf(c, "ok", r.Health, "rule %s: %s", r.Name, r.Error)
		}
	}, 30*time.Second, 250*time.Millisecond)
	require.Len(t, rules.Groups[0].Rules, len(loadAlertRules(t)))
}
