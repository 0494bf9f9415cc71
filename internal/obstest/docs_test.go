package obstest_test

import (
	"bufio"
	"os"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// docMetric is one row of a metrics table of docs/metrics.md.
type docMetric struct {
	Name   string
	Type   string
	Labels []string
	// Section is the heading above the table, such as "Pulse".
	Section string
}

// parseMetricsDoc reads every table of docs/metrics.md whose header starts
// with "| name | type | labels |".
func parseMetricsDoc(t testing.TB) []docMetric {
	t.Helper()
	f, err := os.Open(repoPath(t, "docs/metrics.md"))
	require.NoError(t, err)
	defer f.Close()

	var (
		out     []docMetric
		section string
		inTable bool
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if heading, ok := strings.CutPrefix(line, "## "); ok {
			section = heading
			continue
		}
		if !strings.HasPrefix(line, "|") {
			inTable = false
			continue
		}
		cells := tableCells(line)
		if len(cells) >= 3 && cells[0] == "name" && cells[1] == "type" && cells[2] == "labels" {
			inTable = true
			continue
		}
		if !inTable || strings.HasPrefix(cells[0], "---") {
			continue
		}
		require.GreaterOrEqualf(t, len(cells), 3, "docs/metrics.md: row %q has fewer than 3 cells", line)
		m := docMetric{Name: strings.Trim(cells[0], "`"), Type: cells[1], Section: section}
		if cells[2] != "none" {
			for _, l := range strings.Split(cells[2], ",") {
				m.Labels = append(m.Labels, strings.Trim(strings.TrimSpace(l), "`"))
			}
		}
		slices.Sort(m.Labels)
		out = append(out, m)
	}
	require.NoError(t, sc.Err())
	require.NotEmpty(t, out, "docs/metrics.md has no metrics table")
	return out
}

func tableCells(line string) []string {
	line = strings.TrimPrefix(strings.TrimSuffix(line, "|"), "|")
	cells := strings.Split(line, "|")
	for i := range cells {
		cells[i] = strings.TrimSpace(cells[i])
	}
	return cells
}

// typeName returns the name that docs/metrics.md uses for a metric type.
func typeName(t dto.MetricType) string {
	switch t {
	case dto.MetricType_COUNTER:
		return "counter"
	case dto.MetricType_GAUGE:
		return "gauge"
	case dto.MetricType_HISTOGRAM:
		return "histogram"
	case dto.MetricType_SUMMARY:
		return "summary"
	default:
		return "untyped"
	}
}

// labelNames returns the label names of every sample of f, without the
// le and quantile labels of histograms and summaries.
func labelNames(f *dto.MetricFamily) map[string]bool {
	names := map[string]bool{}
	for _, m := range f.GetMetric() {
		for _, l := range m.GetLabel() {
			names[l.GetName()] = true
		}
	}
	return names
}

// checkAgainstDoc checks that every documented metric is in the scrape with
// the documented type and labels, and that every metric of the scrape whose
// name starts with a documented prefix is documented.
func checkAgainstDoc(t *testing.T, families map[string]*dto.MetricFamily) {
	t.Helper()
	documented := map[string]bool{}
	for _, d := range parseMetricsDoc(t) {
		documented[d.Name] = true
		f, ok := families[d.Name]
		if !check(t, ok, "docs/metrics.md lists %s (%s), which /metrics does not export", d.Name, d.Section) {
			continue
		}
		check(t, typeName(f.GetType()) == d.Type, "%s: docs/metrics.md says %s, /metrics says %s", d.Name, d.Type, typeName(f.GetType()))
		for _, m := range f.GetMetric() {
			var got []string
			for _, l := range m.GetLabel() {
				got = append(got, l.GetName())
			}
			slices.Sort(got)
			if !check(t, slices.Equal(got, d.Labels), "%s: docs/metrics.md says labels %v, /metrics has a sample with %v", d.Name, d.Labels, got) {
				break
			}
		}
	}
	for name := range families {
		for _, prefix := range []string{"pulse_", "grpc_", "asynq_"} {
			if strings.HasPrefix(name, prefix) {
				check(t, documented[name], "/metrics exports %s, which docs/metrics.md does not list", name)
			}
		}
	}
}

// check reports a failure without stopping the test, so that one run lists
// every mismatch, and returns ok.
func check(t *testing.T, ok bool, format string, args ...any) bool {
	t.Helper()
	if !ok {
		t.Errorf(format, args...)
	}
	return ok
}

func TestParseMetricsDoc(t *testing.T) {
	metrics := parseMetricsDoc(t)
	byName := map[string]docMetric{}
	for _, m := range metrics {
		_, dup := byName[m.Name]
		require.Falsef(t, dup, "docs/metrics.md lists %s twice", m.Name)
		byName[m.Name] = m
		require.Containsf(t, []string{"counter", "gauge", "histogram", "summary"}, m.Type, "%s: type", m.Name)
		if m.Type == "counter" && m.Section == "Pulse" {
			require.Truef(t, strings.HasSuffix(m.Name, "_total"), "counter %s must end with _total", m.Name)
		}
		if m.Type != "counter" && m.Section == "Pulse" {
			require.Falsef(t, strings.HasSuffix(m.Name, "_total"), "%s %s must not end with _total", m.Type, m.Name)
		}
	}
	require.Equal(t, []string{"state"}, byName["pulse_schedules"].Labels)
	require.Equal(t, []string{"handler", "outcome"}, byName["pulse_worker_executions_total"].Labels)
	require.Equal(t, "histogram", byName["grpc_server_handling_seconds"].Type)
}
