package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
)

// figure is one measured value of one run, with the baseline it is compared
// with in the same run when there is one.
type figure struct {
	scenario string
	name     string
	unit     string
	value    float64
	// baseline names the same-run baseline; empty when the figure has none.
	baseline      string
	baselineValue float64
	// target describes the goal; empty when there is none.
	target string
	// met decides whether the goal is met from the median value and the
	// median ratio to the baseline.
	met func(value, ratio float64) bool
}

func (f figure) ratio() float64 {
	if f.baseline == "" || f.baselineValue == 0 {
		return math.NaN()
	}
	return f.value / f.baselineValue
}

// row is a figure aggregated over every run.
type row struct {
	first    figure
	values   []float64
	bases    []float64
	ratios   []float64
	runCount int
}

// aggregate groups the figures of all runs by scenario and name, in the
// order they first appear.
func aggregate(runs [][]figure) []*row {
	var order []string
	rows := map[string]*row{}
	for _, figures := range runs {
		for _, f := range figures {
			key := f.scenario + "\x00" + f.name
			r, ok := rows[key]
			if !ok {
				r = &row{first: f}
				rows[key] = r
				order = append(order, key)
			}
			r.values = append(r.values, f.value)
			if f.baseline != "" {
				r.bases = append(r.bases, f.baselineValue)
				r.ratios = append(r.ratios, f.ratio())
			}
			r.runCount++
		}
	}
	out := make([]*row, len(order))
	for i, key := range order {
		out[i] = rows[key]
	}
	return out
}

// writeTable prints the aggregated figures as a Markdown table.
func writeTable(w io.Writer, rows []*row) {
	fmt.Fprintln(w, "| scenario | figure | min | median | max | baseline (median) | ratio min / median / max | target | met |")
	fmt.Fprintln(w, "| --- | --- | ---: | ---: | ---: | --- | --- | --- | --- |")
	for _, r := range rows {
		v := spreadOf(r.values)
		base, ratio := "", ""
		ratioMedian := math.NaN()
		if r.first.baseline != "" {
			b := spreadOf(r.bases)
			rs := spreadOf(r.ratios)
			ratioMedian = rs.median
			base = fmt.Sprintf("%s: %s", r.first.baseline, formatValue(b.median, r.first.unit))
			ratio = fmt.Sprintf("%.2f / %.2f / %.2f", rs.min, rs.median, rs.max)
		}
		met := ""
		if r.first.met != nil {
			met = "no"
			if r.first.met(v.median, ratioMedian) {
				met = "yes"
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.first.scenario, r.first.name,
			formatValue(v.min, r.first.unit), formatValue(v.median, r.first.unit), formatValue(v.max, r.first.unit),
			base, ratio, r.first.target, met)
	}
}

func formatValue(v float64, unit string) string {
	switch {
	case math.IsNaN(v):
		return "n/a"
	case unit == "ms":
		return fmt.Sprintf("%.1f ms", v)
	case unit == "%":
		return fmt.Sprintf("%.0f %%", v)
	case unit == "":
		return fmt.Sprintf("%.2f", v)
	case v >= 100:
		return fmt.Sprintf("%.0f %s", v, unit)
	default:
		return fmt.Sprintf("%.2f %s", v, unit)
	}
}

// machine describes the CPU, cores and memory from /proc.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := "unknown memory"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				var kb int64
				fmt.Sscan(strings.TrimSpace(v), &kb)
				mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	return fmt.Sprintf("%s, %d cores, %s", model, runtime.NumCPU(), mem)
}
