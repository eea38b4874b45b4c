package statuspage

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The throughput graph is an inline SVG: no script, no external file, so it
// shows offline and in any browser. Its coordinates are numbers the page
// computes; nothing from outside reaches the SVG.

const (
	graphW = 600.0
	graphH = 100.0
)

// graph is what the template draws.
type graph struct {
	ToArea, ToLine     string // SVG path data
	FromArea, FromLine string
	Peak               string // the scale: the top of the graph, e.g. "1.2 MB/s"
	NowTo, NowFrom     string // the latest interval's rates
	Span               string // e.g. "last 6 min"
	Empty              bool   // no interval known yet
	Idle               bool   // known, but no byte moved: nothing to draw
	Label              string // for screen readers
}

func makeGraph(rs []rate, interval time.Duration) graph {
	g := graph{Span: "last " + shortDuration(time.Duration(len(rs))*interval)}
	var peak float64
	known := 0
	var last *rate
	for i := range rs {
		if rs[i].known {
			known++
			peak = max(peak, rs[i].to, rs[i].from)
			last = &rs[i]
		}
	}
	if known == 0 {
		g.Empty = true
		g.Peak, g.NowTo, g.NowFrom = "–", "–", "–"
		g.Label = "throughput graph: no samples yet"
		return g
	}
	top := niceCeil(peak)
	g.Peak = formatRate(top)
	g.NowTo, g.NowFrom = formatRate(last.to), formatRate(last.from)
	if peak == 0 {
		// Most mappings are idle most of the time; a flat line says less
		// than the caption and costs bytes on every refresh.
		g.Idle = true
		g.Label = "throughput, " + g.Span + ": no traffic"
		return g
	}
	// Mirrored: to agents above the middle, from agents below, so both
	// show even when they carry the same bytes (an echo).
	g.ToLine, g.ToArea = paths(rs, top, -1, func(r rate) float64 { return r.to })
	g.FromLine, g.FromArea = paths(rs, top, 1, func(r rate) float64 { return r.from })
	g.Label = fmt.Sprintf("throughput, %s: to agents now %s, from agents now %s, scale up to %s", g.Span, g.NowTo, g.NowFrom, g.Peak)
	return g
}

// paths returns the line and the area between it and the middle, broken
// where an interval is unknown; dir -1 draws upwards, 1 downwards.
func paths(rs []rate, top, dir float64, v func(rate) float64) (line, area string) {
	var lb, ab strings.Builder
	const mid = graphH / 2
	step := graphW / float64(max(len(rs)-1, 1))
	// Whole units of a 600x100 box drawn at most a few hundred pixels
	// wide: finer coordinates would only lengthen the page.
	num := func(f float64) string { return strconv.Itoa(int(f + 0.5)) }
	var run [][2]float64
	flush := func() {
		if len(run) == 0 {
			return
		}
		if len(run) == 1 { // one interval alone: a short flat stroke
			run = append(run, [2]float64{run[0][0] + step/2, run[0][1]})
		}
		for i, p := range run {
			cmd := " L"
			if i == 0 {
				cmd = " M"
			}
			lb.WriteString(cmd + num(p[0]) + " " + num(p[1]))
		}
		ab.WriteString(" M" + num(run[0][0]) + " " + num(mid))
		for _, p := range run {
			ab.WriteString(" L" + num(p[0]) + " " + num(p[1]))
		}
		ab.WriteString(" L" + num(run[len(run)-1][0]) + " " + num(mid) + " Z")
		run = run[:0]
	}
	for i, r := range rs {
		if !r.known {
			flush()
			continue
		}
		// 4% headroom so a flat-out line stays visible at the edge.
		y := mid + dir*v(r)/top*mid*0.96
		run = append(run, [2]float64{float64(i) * step, y})
	}
	flush()
	return strings.TrimSpace(lb.String()), strings.TrimSpace(ab.String())
}

// niceCeil rounds a rate up to 1, 2 or 5 times a power of ten, for a scale
// a person can read; at least 1 KB/s so an idle mapping draws flat.
func niceCeil(v float64) float64 {
	if v < 1000 {
		return 1000
	}
	p := 1.0
	for p*10 <= v {
		p *= 10
	}
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}
