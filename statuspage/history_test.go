package statuspage

import (
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
)

// The graph's history holds a fixed number of samples per mapping and
// forgets removed mappings, so its memory is bounded by the port pool.
func TestHistoryIsBoundedAndForgetsRemovedMappings(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 6), Logger: relaytest.Quiet()})
	a := in.AddPublic(t, 2, 200000)
	b := in.AddPublic(t, 2, 200000)
	h := newHistory(5)
	t0 := time.Now()
	for i := range 20 {
		h.sample(t0.Add(time.Duration(i)*time.Second), in.EachTraffic)
	}
	if len(h.per) != 2 || len(h.times) != 5 || len(h.per[a.ID].to) != 5 {
		t.Fatalf("history holds %d mappings, %d times, %d samples; want 2, 5, 5", len(h.per), len(h.times), len(h.per[a.ID].to))
	}
	if rs := h.rates(a.ID); len(rs) != 4 || !rs[0].known || !rs[3].known {
		t.Errorf("rates = %+v, want 4 known intervals", rs)
	}
	in.Remove(t, b.ID)
	h.sample(t0.Add(21*time.Second), in.EachTraffic)
	if _, ok := h.per[b.ID]; ok || len(h.per) != 1 {
		t.Errorf("removed mapping still in the history (%d mappings)", len(h.per))
	}
	// A mapping added later has no intervals before it existed.
	c := in.AddPublic(t, 2, 200000)
	h.sample(t0.Add(22*time.Second), in.EachTraffic)
	h.sample(t0.Add(23*time.Second), in.EachTraffic)
	known := 0
	for _, r := range h.rates(c.ID) {
		if r.known {
			known++
		}
	}
	if known != 1 {
		t.Errorf("new mapping has %d known intervals after two samples, want 1", known)
	}
}

func TestGraphScaleAndGaps(t *testing.T) {
	rs := []rate{{known: false}, {known: true, to: 1500, from: 100}, {known: true, to: 3000}, {known: false}, {known: true, to: 10}}
	g := makeGraph(rs, 5*time.Second)
	if g.Peak != "5.00 kB/s" || g.NowTo != "10 B/s" || g.Span != "last 25 s" {
		t.Errorf("graph peak %q now %q span %q; want 5.00 kB/s, 10 B/s, last 25 s", g.Peak, g.NowTo, g.Span)
	}
	// Two runs of known intervals: two subpaths.
	if n := countM(g.ToLine); n != 2 {
		t.Errorf("line %q has %d subpaths, want 2 (a gap where intervals are unknown)", g.ToLine, n)
	}
	if e := makeGraph(make([]rate, 4), time.Second); !e.Empty {
		t.Errorf("graph with no known interval is not empty")
	}
}

func countM(d string) int {
	n := 0
	for _, c := range d {
		if c == 'M' {
			n++
		}
	}
	return n
}

// BenchmarkSample is the cost of one graph sample, paid every interval
// whether or not anyone looks at the page.
func BenchmarkSample100Mappings(b *testing.B) {
	in := relaytest.Start(b, relay.Options{Config: relaytest.Config(b, 200), Logger: relaytest.Quiet()})
	for range 100 {
		in.AddPublic(b, 2, 200000)
	}
	h := newHistory(DefaultSamples)
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		h.sample(now.Add(time.Duration(i)*time.Second), in.EachTraffic)
	}
}
