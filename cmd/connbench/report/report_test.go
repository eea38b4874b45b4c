package report_test

import (
	"math"
	"strings"
	"testing"

	"github.com/eclipse-iofog/iofog-connector/cmd/connbench/report"
)

func TestRatio(t *testing.T) {
	if got := report.Ratio(3, 4); got != 0.75 {
		t.Errorf("Ratio(3, 4) = %v, want 0.75", got)
	}
	for _, c := range [][2]float64{{1, 0}, {math.NaN(), 1}, {1, math.NaN()}} {
		if got := report.Ratio(c[0], c[1]); !math.IsNaN(got) {
			t.Errorf("Ratio(%v, %v) = %v, want NaN (no figure rather than a wrong one)", c[0], c[1], got)
		}
	}
}

func TestVerdict(t *testing.T) {
	atLeast := report.Target{AtLeast: true, Limit: 0.9, OnRatio: true}
	atMost := report.Target{Limit: 12, Unit: "KiB"}
	cases := []struct {
		name string
		row  report.Row
		want string
	}{
		{"ratio met exactly", report.Row{Value: 9, Baseline: 10, Target: atLeast}, "PASS"},
		{"ratio missed", report.Row{Value: 8, Baseline: 10, Target: atLeast}, "MISS"},
		{"baseline missing", report.Row{Value: 8, Baseline: math.NaN(), Target: atLeast}, "n/a"},
		{"value bound met", report.Row{Value: 11.5, Baseline: math.NaN(), Target: atMost}, "PASS"},
		{"value bound missed", report.Row{Value: 12.5, Baseline: math.NaN(), Target: atMost}, "MISS"},
		{"value missing", report.Row{Value: math.NaN(), Baseline: math.NaN(), Target: atMost}, "n/a"},
		{"no target", report.Row{Value: 1, Baseline: 2}, "-"},
	}
	for _, c := range cases {
		if got := c.row.Verdict(); got != c.want {
			t.Errorf("%s: Verdict() = %q, want %q", c.name, got, c.want)
		}
	}
}

func TestWriteListsEachNoteOnce(t *testing.T) {
	var b strings.Builder
	rows := []report.Row{
		{Figure: "a", Value: 1, Baseline: 2, BaseName: "base", Note: "peer missing"},
		{Figure: "b", Value: 3, Baseline: 2, BaseName: "base", Note: "peer missing"},
		{Figure: "c", Value: 3, Baseline: 2, BaseName: "base", Target: report.Target{AtLeast: true, Limit: 1, OnRatio: true}},
	}
	if err := report.Write(&b, rows); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if n := strings.Count(out, "peer missing"); n != 1 {
		t.Errorf("note printed %d times, want once:\n%s", n, out)
	}
	if !strings.Contains(out, "a [1]") || !strings.Contains(out, "b [1]") {
		t.Errorf("rows do not point at their note:\n%s", out)
	}
	if !strings.Contains(out, "1.50") || !strings.Contains(out, "PASS") {
		t.Errorf("row c should show ratio 1.50 and PASS:\n%s", out)
	}
}
