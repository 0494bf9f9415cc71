package obstest_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// alertRule is one rule of dashboards/alerts.yaml.
type alertRule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func loadAlertRules(t testing.TB) []alertRule {
	t.Helper()
	data, err := os.ReadFile(repoPath(t, "dashboards/alerts.yaml"))
	require.NoError(t, err)
	var file struct {
		Groups []struct {
			Name  string      `yaml:"name"`
			Rules []alertRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(data, &file))
	var rules []alertRule
	for _, g := range file.Groups {
		rules = append(rules, g.Rules...)
	}
	require.NotEmpty(t, rules, "dashboards/alerts.yaml has no rule")
	return rules
}

// runbookAnchors returns the GitHub anchors of the headings of
// docs/runbook.md.
func runbookAnchors(t testing.TB) map[string]bool {
	t.Helper()
	f, err := os.Open(repoPath(t, "docs/runbook.md"))
	require.NoError(t, err)
	defer f.Close()
	nonWord := regexp.MustCompile(`[^a-z0-9 _-]`)
	anchors := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "#") {
			continue
		}
		heading := strings.TrimSpace(strings.TrimLeft(line, "#"))
		anchor := nonWord.ReplaceAllString(strings.ToLower(heading), "")
		anchors[strings.ReplaceAll(anchor, " ", "-")] = true
	}
	require.NoError(t, sc.Err())
	return anchors
}

// TestAlertRulesHaveSeverityAndRunbook checks that every alert has a
// severity, a summary, a description and a runbook_url that points to a
// section of docs/runbook.md.
func TestAlertRulesHaveSeverityAndRunbook(t *testing.T) {
	anchors := runbookAnchors(t)
	const runbookPrefix = "https://github.com/pulse-sched/pulse/blob/main/docs/runbook.md#"
	seen := map[string]bool{}
	for _, r := range loadAlertRules(t) {
		require.NotEmptyf(t, r.Alert, "rule %q is not an alert", r.Record)
		require.Falsef(t, seen[r.Alert], "alert %s is defined twice", r.Alert)
		seen[r.Alert] = true
		require.Containsf(t, []string{"critical", "warning"}, r.Labels["severity"], "%s: severity", r.Alert)
		require.NotEmptyf(t, r.Annotations["summary"], "%s: summary", r.Alert)
		require.NotEmptyf(t, r.Annotations["description"], "%s: description", r.Alert)

		anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], runbookPrefix)
		require.Truef(t, ok, "%s: runbook_url %q does not start with %s", r.Alert, r.Annotations["runbook_url"], runbookPrefix)
		require.Equalf(t, strings.ToLower(r.Alert), anchor, "%s: runbook anchor", r.Alert)
		require.Truef(t, anchors[anchor], "%s: docs/runbook.md has no section %q", r.Alert, r.Alert)
	}
}

// TestAlertRulesTestedBothWays checks that dashboards/alerts_test.yaml has,
// for every alert, a case where it fires and one where it does not.
func TestAlertRulesTestedBothWays(t *testing.T) {
	data, err := os.ReadFile(repoPath(t, "dashboards/alerts_test.yaml"))
	require.NoError(t, err)
	var file struct {
		Tests []struct {
			Name          string `yaml:"name"`
			AlertRuleTest []struct {
				AlertName string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	require.NoError(t, yaml.Unmarshal(data, &file))

	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range file.Tests {
		for _, c := range tc.AlertRuleTest {
			if len(c.ExpAlerts) > 0 {
				fires[c.AlertName] = true
			} else {
				quiet[c.AlertName] = true
			}
		}
	}
	for _, r := range loadAlertRules(t) {
		require.Truef(t, fires[r.Alert], "alerts_test.yaml has no case where %s fires", r.Alert)
		require.Truef(t, quiet[r.Alert], "alerts_test.yaml has no case where %s stays quiet", r.Alert)
	}
}

// TestPromtoolChecksAndTestsRules runs promtool check rules and promtool
// test rules on the alert rules.
func TestPromtoolChecksAndTestsRules(t *testing.T) {
	promtool := requireTool(t, "promtool", "prometheus")
	dir := repoPath(t, "dashboards")
	run := func(args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoErrorf(t, err, "promtool %s:\n%s", strings.Join(args, " "), out)
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
	}
	run("check", "rules", "alerts.yaml")
	run("test", "rules", "alerts_test.yaml")
}
