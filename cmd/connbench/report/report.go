// Package report turns measurements into the benchmark's table: each figure
// next to the baseline it is judged against, the ratio, the target and
// whether the target was met. Figures are never asserted anywhere; the
// verdict is printed for people to read.
package report

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
)

// Target is a bound on a row's ratio (OnRatio) or on its value.
type Target struct {
	AtLeast bool    // true: >= Limit; false: <= Limit
	Limit   float64 // 0 with a zero Target: informational row
	OnRatio bool
	Unit    string // for a bound on the value
}

// Informational reports whether the row has no target.
func (t Target) Informational() bool { return t == Target{} }

func (t Target) String() string {
	if t.Informational() {
		return "-"
	}
	op := "<="
	if t.AtLeast {
		op = ">="
	}
	if t.OnRatio {
		return fmt.Sprintf("ratio %s %g", op, t.Limit)
	}
	return strings.TrimSpace(fmt.Sprintf("%s %g %s", op, t.Limit, t.Unit))
}

// Ratio returns value/baseline, or NaN when either is missing.
func Ratio(value, baseline float64) float64 {
	if baseline == 0 || math.IsNaN(baseline) || math.IsNaN(value) {
		return math.NaN()
	}
	return value / baseline
}

// Row is one line of the table.
type Row struct {
	Figure   string
	Value    float64 // NaN when not measured
	Baseline float64 // NaN when the row has no baseline
	BaseName string  // what the baseline is
	Format   func(float64) string
	Target   Target
	Note     string // why a figure is missing, or a caveat
}

// Ratio returns the row's value over its baseline.
func (r Row) Ratio() float64 { return Ratio(r.Value, r.Baseline) }

// Verdict is PASS, MISS, "-" (no target) or "n/a" (not measured).
func (r Row) Verdict() string {
	if r.Target.Informational() {
		return "-"
	}
	v := r.Value
	if r.Target.OnRatio {
		v = r.Ratio()
	}
	if math.IsNaN(v) {
		return "n/a"
	}
	if (r.Target.AtLeast && v >= r.Target.Limit) || (!r.Target.AtLeast && v <= r.Target.Limit) {
		return "PASS"
	}
	return "MISS"
}

func (r Row) format(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	if r.Format == nil {
		return fmt.Sprintf("%.3g", v)
	}
	return r.Format(v)
}

// Write prints rows as an aligned plain-text table, then each distinct note
// once, numbered; rows point at their notes as [n].
func Write(w io.Writer, rows []Row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tvalue\tbaseline\tratio\ttarget\tverdict")
	var notes []string
	index := map[string]int{}
	for _, r := range rows {
		base := "-"
		if !math.IsNaN(r.Baseline) {
			base = r.format(r.Baseline) + " (" + r.BaseName + ")"
		}
		ratio := "-"
		if q := r.Ratio(); !math.IsNaN(q) {
			ratio = fmt.Sprintf("%.2f", q)
		}
		mark := ""
		if r.Note != "" {
			n, ok := index[r.Note]
			if !ok {
				notes = append(notes, r.Note)
				n = len(notes)
				index[r.Note] = n
			}
			mark = fmt.Sprintf(" [%d]", n)
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\t%s\t%s\n", r.Figure, mark, r.format(r.Value), base, ratio, r.Target, r.Verdict())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for i, n := range notes {
		if _, err := fmt.Fprintf(w, "[%d] %s\n", i+1, n); err != nil {
			return err
		}
	}
	return nil
}

// Common formats.
func GBps(v float64) string      { return fmt.Sprintf("%.2f GB/s", v/1e9) }
func SecPerGiB(v float64) string { return fmt.Sprintf("%.3f s/GiB", v) }
func PerSec(v float64) string    { return fmt.Sprintf("%.0f /s", v) }
