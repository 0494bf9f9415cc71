package obstest_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/proto/protocolpb"
)

// dashboard is the part of a Grafana dashboard that the tests read.
type dashboard struct {
	Title      string `json:"title"`
	UID        string `json:"uid"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasourceRef  `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

func loadDashboard(t testing.TB) dashboard {
	t.Helper()
	data, err := os.ReadFile(repoPath(t, "dashboards/pulse.json"))
	require.NoError(t, err)
	var d dashboard
	require.NoError(t, json.Unmarshal(data, &d), "dashboards/pulse.json is not valid JSON")
	return d
}

// allPanels returns the panels of d, including those inside rows.
func allPanels(d dashboard) []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// labelValuesQuery matches Grafana's label_values(metric, label) variable
// query.
var labelValuesQuery = regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$`)

// query is one PromQL expression and where it comes from.
type query struct {
	Where string
	Expr  string
}

// dashboardQueries returns every PromQL expression of the dashboard and of
// the alert rules, and the label_values variables as selectors.
func dashboardQueries(t testing.TB) ([]query, []selector) {
	t.Helper()
	d := loadDashboard(t)
	var queries []query
	for _, p := range allPanels(d) {
		for _, target := range p.Targets {
			queries = append(queries, query{Where: fmt.Sprintf("pulse.json panel %q target %s", p.Title, target.RefID), Expr: target.Expr})
		}
	}
	for _, r := range loadAlertRules(t) {
		queries = append(queries, query{Where: "alerts.yaml " + r.Alert, Expr: r.Expr})
	}

	var variables []selector
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			require.NoError(t, json.Unmarshal(v.Query, &q.Query), "variable %s: query", v.Name)
		}
		m := labelValuesQuery.FindStringSubmatch(q.Query)
		require.NotNilf(t, m, "variable %s: query %q is not label_values(metric, label)", v.Name, q.Query)
		variables = append(variables, selector{Metric: m[1], Labels: []string{m[2]}})
	}
	return queries, variables
}

// TestDashboardIsImportable checks the structure that Grafana needs to
// import the dashboard as is: a Prometheus data source variable that every
// panel and query uses, unique panel IDs, and positions on the 24-column
// grid.
func TestDashboardIsImportable(t *testing.T) {
	d := loadDashboard(t)
	require.Equal(t, "Pulse", d.Title)
	require.NotEmpty(t, d.UID)

	var hasDatasource bool
	for _, v := range d.Templating.List {
		if v.Type == "datasource" && v.Name == "datasource" {
			require.JSONEq(t, `"prometheus"`, string(v.Query), "the data source variable's type")
			hasDatasource = true
		}
	}
	require.True(t, hasDatasource, "no data source variable named datasource")

	ids := map[int]bool{}
	wantDS := datasourceRef{Type: "prometheus", UID: "${datasource}"}
	for _, p := range allPanels(d) {
		require.Falsef(t, ids[p.ID], "panel ID %d is used twice", p.ID)
		ids[p.ID] = true
		require.LessOrEqualf(t, p.GridPos.X+p.GridPos.W, 24, "panel %q is wider than the grid", p.Title)
		require.Positivef(t, p.GridPos.H, "panel %q has no height", p.Title)
		if p.Type == "row" {
			continue
		}
		require.NotNilf(t, p.Datasource, "panel %q has no data source", p.Title)
		require.Equalf(t, wantDS, *p.Datasource, "panel %q data source", p.Title)
		require.NotEmptyf(t, p.Targets, "panel %q has no query", p.Title)
		for _, target := range p.Targets {
			require.NotEmptyf(t, target.Expr, "panel %q target %s has no expression", p.Title, target.RefID)
			require.NotNilf(t, target.Datasource, "panel %q target %s has no data source", p.Title, target.RefID)
			require.Equalf(t, wantDS, *target.Datasource, "panel %q target %s data source", p.Title, target.RefID)
		}
	}

	queries, _ := dashboardQueries(t)
	for _, q := range queries {
		_, err := parsePromQL(q.Expr)
		require.NoErrorf(t, err, "%s", q.Where)
	}
}

// targetLabels are added by Prometheus to every scraped series.
var targetLabels = []string{"job", "instance"}

// TestDashboardAndAlertsUseExportedMetrics checks the queries of the
// dashboard's panels and variables and of the alert rules against a running
// pulse serve. Every metric they query must be exported, and every label
// they match or group by must exist on those metrics. A renamed metric or
// label then fails the tests.
func TestDashboardAndAlertsUseExportedMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("runs pulse serve for a few seconds")
	}
	queries, variables := dashboardQueries(t)

	redis := redistest.Start(t)
	reg := writeRegistry(t)
	srv := startServe(t, redis.URL(), reg, nil)
	create(t, srv.Client(t), reg.PluginToken, &protocolpb.CreateScheduleRequest{
		HandlerName: "pulse.log", IntervalSeconds: 1, RunImmediately: true,
	})

	// Every family exists once a slot ran and the asynq metrics, cached for
	// a few seconds, were read after the first enqueue.
	var series map[string]*dto.MetricFamily
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		families, err := tryScrape(srv)
		if !assert.NoError(c, err) {
			return
		}
		series = seriesNames(families)
		missing := missingMetrics(queries, variables, series)
		assert.Emptyf(c, missing, "queried metrics that /metrics does not export:\n%s", strings.Join(missing, "\n"))
	}, 20*time.Second, 250*time.Millisecond)

	for _, v := range variables {
		checkLabels(t, "pulse.json variable on "+v.Metric, []selector{v}, nil, series)
	}
	for _, q := range queries {
		refs, err := parsePromQL(q.Expr)
		require.NoErrorf(t, err, "%s", q.Where)
		checkLabels(t, q.Where, refs.Selectors, refs.Grouping, series)
	}
}

// missingMetrics lists the queried metrics that series lacks.
func missingMetrics(queries []query, variables []selector, series map[string]*dto.MetricFamily) []string {
	seen := map[string]bool{}
	var missing []string
	add := func(where, metric string) {
		if _, ok := series[metric]; !ok && !seen[where+metric] {
			seen[where+metric] = true
			missing = append(missing, fmt.Sprintf("%s: %s", where, metric))
		}
	}
	for _, v := range variables {
		add("pulse.json variable", v.Metric)
	}
	for _, q := range queries {
		refs, err := parsePromQL(q.Expr)
		if err != nil {
			missing = append(missing, fmt.Sprintf("%s: %v", q.Where, err))
			continue
		}
		for _, s := range refs.Selectors {
			add(q.Where, s.Metric)
		}
	}
	sort.Strings(missing)
	return missing
}

// checkLabels checks that each selector's matchers name labels of its
// metric, and that each grouping label is a label of one of the selected
// metrics.
func checkLabels(t *testing.T, where string, selectors []selector, grouping []string, series map[string]*dto.MetricFamily) {
	t.Helper()
	union := map[string]bool{"le": true}
	for _, l := range targetLabels {
		union[l] = true
	}
	for _, s := range selectors {
		known := labelNames(series[s.Metric])
		for _, l := range targetLabels {
			known[l] = true
		}
		if series[s.Metric].GetType() == dto.MetricType_HISTOGRAM && strings.HasSuffix(s.Metric, "_bucket") {
			known["le"] = true
		}
		for l := range known {
			union[l] = true
		}
		for _, l := range s.Labels {
			check(t, known[l], "%s: %s has no label %q (labels: %v)", where, s.Metric, l, sortedKeys(known))
		}
	}
	for _, l := range grouping {
		check(t, union[l], "%s: groups by %q, which none of its metrics has", where, l)
	}
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
