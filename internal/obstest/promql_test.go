package obstest_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// selector is one vector selector of a PromQL expression.
type selector struct {
	Metric string
	// Labels are the label names of its matchers.
	Labels []string
}

// promqlRefs is what an expression refers to: its selectors and the label
// names of its by, without, on, ignoring and group clauses.
type promqlRefs struct {
	Selectors []selector
	Grouping  []string
}

// promqlKeywords are the words that are not metric names when no "(" follows:
// operators, modifiers and aggregations, which a by or without clause may
// separate from their "(".
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"inf": true, "nan": true, "atan2": true,
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
}

// groupingKeywords take a parenthesized list of label names.
var groupingKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// parsePromQL finds the selectors and grouping labels of a PromQL
// expression, as Grafana stores it (with $variables). It is a scanner, not
// a parser: it covers just enough of the grammar to tell metric names from
// functions, keywords, label names, strings, numbers and durations.
func parsePromQL(expr string) (promqlRefs, error) {
	var refs promqlRefs
	s := []rune(expr)
	i := 0
	skipSpace := func() {
		for i < len(s) && strings.ContainsRune(" \t\r\n", s[i]) {
			i++
		}
	}
	readIdent := func() string {
		start := i
		for i < len(s) && (isIdentStart(s[i]) || (s[i] >= '0' && s[i] <= '9')) {
			i++
		}
		return string(s[start:i])
	}
	skipString := func() error {
		quote := s[i]
		i++
		for i < len(s) && s[i] != quote {
			if s[i] == '\\' && quote != '`' {
				i++
			}
			i++
		}
		if i >= len(s) {
			return fmt.Errorf("unterminated string in %q", expr)
		}
		i++
		return nil
	}
	// readLabelList reads "(a, b)" after a grouping keyword.
	readLabelList := func() ([]string, error) {
		skipSpace()
		if i >= len(s) || s[i] != '(' {
			return nil, nil
		}
		i++
		var labels []string
		for {
			skipSpace()
			if i >= len(s) {
				return nil, fmt.Errorf("unterminated label list in %q", expr)
			}
			if s[i] == ')' {
				i++
				return labels, nil
			}
			if s[i] == ',' {
				i++
				continue
			}
			if !isIdentStart(s[i]) {
				return nil, fmt.Errorf("unexpected %q in a label list of %q", s[i], expr)
			}
			labels = append(labels, readIdent())
		}
	}
	// readMatchers reads "{a="x", b=~"y"}" and returns the label names.
	readMatchers := func() ([]string, error) {
		i++ // {
		var labels []string
		for {
			skipSpace()
			if i >= len(s) {
				return nil, fmt.Errorf("unterminated matchers in %q", expr)
			}
			switch {
			case s[i] == '}':
				i++
				return labels, nil
			case s[i] == ',':
				i++
			case s[i] == '"' || s[i] == '\'' || s[i] == '`':
				if err := skipString(); err != nil {
					return nil, err
				}
			case strings.ContainsRune("=!~", s[i]):
				i++
			case isIdentStart(s[i]):
				labels = append(labels, readIdent())
			default:
				return nil, fmt.Errorf("unexpected %q in the matchers of %q", s[i], expr)
			}
		}
	}

	for i < len(s) {
		c := s[i]
		switch {
		case strings.ContainsRune(" \t\r\n(),+-*/%^=!<>", c):
			i++
		case c == '"' || c == '\'' || c == '`':
			if err := skipString(); err != nil {
				return refs, err
			}
		case c == '[':
			for i < len(s) && s[i] != ']' {
				i++
			}
			if i >= len(s) {
				return refs, fmt.Errorf("unterminated range in %q", expr)
			}
			i++
		case c == '$':
			i++
			readIdent()
		case c >= '0' && c <= '9' || c == '.':
			for i < len(s) && (isIdentStart(s[i]) || (s[i] >= '0' && s[i] <= '9') || s[i] == '.') {
				i++
			}
		case c == '{':
			return refs, fmt.Errorf("a selector without metric name in %q", expr)
		case isIdentStart(c):
			word := readIdent()
			lower := strings.ToLower(word)
			if groupingKeywords[lower] {
				labels, err := readLabelList()
				if err != nil {
					return refs, err
				}
				refs.Grouping = append(refs.Grouping, labels...)
				continue
			}
			if lower == "offset" {
				skipSpace()
				readIdent()
				continue
			}
			skipSpace()
			if i < len(s) && s[i] == '(' {
				continue // a function or an aggregation
			}
			if promqlKeywords[lower] {
				continue
			}
			sel := selector{Metric: word}
			if i < len(s) && s[i] == '{' {
				labels, err := readMatchers()
				if err != nil {
					return refs, err
				}
				sel.Labels = labels
			}
			refs.Selectors = append(refs.Selectors, sel)
		default:
			return refs, fmt.Errorf("unexpected %q in %q", c, expr)
		}
	}
	return refs, nil
}

func isIdentStart(r rune) bool {
	return r == '_' || r == ':' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
}

func TestParsePromQL(t *testing.T) {
	cases := []struct {
		expr     string
		metrics  []string
		labels   []string
		grouping []string
	}{
		{
			expr:     `histogram_quantile(0.99, sum by (le) (rate(pulse_x_seconds_bucket{job=~"$job"}[$__rate_interval])))`,
			metrics:  []string{"pulse_x_seconds_bucket"},
			labels:   []string{"job"},
			grouping: []string{"le"},
		},
		{
			expr:     "sum by (handler) (rate(a_total{outcome=~\"failed|retrying\"}[15m]))\n  / sum by (handler) (rate(a_total[15m])) > 0.25",
			metrics:  []string{"a_total", "a_total"},
			labels:   []string{"outcome"},
			grouping: []string{"handler", "handler"},
		},
		{
			expr:    `max by (queue) (q{queue="pulse",state="pending"}) > 100 and max by (queue) (deriv(q{state="pending"}[10m])) > 0`,
			metrics: []string{"q", "q"},
			labels:  []string{"queue", "state", "state"},
			grouping: []string{
				"queue", "queue",
			},
		},
		{
			expr:    `time() - max(last_seconds offset 5m) + on(instance) group_left(version) info`,
			metrics: []string{"last_seconds", "info"},
			grouping: []string{
				"instance", "version",
			},
		},
		{expr: `absent(up{job="a b {c}"})`, metrics: []string{"up"}, labels: []string{"job"}},
		{expr: `sum(rate(x[5m])) by (component) > 1e3`, metrics: []string{"x"}, grouping: []string{"component"}},
	}
	for _, tc := range cases {
		refs, err := parsePromQL(tc.expr)
		require.NoError(t, err, tc.expr)
		var metrics, labels []string
		for _, s := range refs.Selectors {
			metrics = append(metrics, s.Metric)
			labels = append(labels, s.Labels...)
		}
		require.Equal(t, tc.metrics, metrics, tc.expr)
		require.Equal(t, tc.labels, labels, tc.expr)
		require.Equal(t, tc.grouping, refs.Grouping, tc.expr)
	}

	_, err := parsePromQL(`{__name__="x"}`)
	require.Error(t, err)
	_, err = parsePromQL(`x{a="b}`)
	require.Error(t, err)
}
