package statuspage

import (
	"context"
	"sync"
	"time"
)

// history keeps, for each mapping, the byte counters as they stood at the
// last n sample times, so the page can draw the last minutes of traffic.
// Memory is fixed per mapping (n samples of two int64) and mappings that
// are gone are dropped at the next sample, so it is bounded by the port
// pool (two ports per mapping).
type history struct {
	n int

	mu    sync.Mutex
	times []time.Time // ring of sample times; zero: not taken yet
	next  int         // slot of the next sample
	per   map[string]*series
	tick  uint64 // samples taken, to find series not seen in this one
}

type series struct {
	to, from []int64 // cumulative counters, one per slot
	valid    []bool  // slot holds a sample of this mapping
	tick     uint64  // last sample that saw the mapping
}

func newHistory(n int) *history {
	return &history{n: n, times: make([]time.Time, n), per: map[string]*series{}}
}

// trafficSource is what the sampler reads: relay.Connector.EachTraffic.
type trafficSource func(fn func(id string, toAgent, fromAgent int64))

// sample records every mapping's counters now.
func (h *history) sample(now time.Time, each trafficSource) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tick++
	slot := h.next
	h.times[slot] = now
	each(func(id string, to, from int64) {
		s := h.per[id]
		if s == nil {
			s = &series{to: make([]int64, h.n), from: make([]int64, h.n), valid: make([]bool, h.n)}
			h.per[id] = s
		}
		s.to[slot], s.from[slot], s.valid[slot], s.tick = to, from, true, h.tick
	})
	for id, s := range h.per {
		if s.tick != h.tick {
			delete(h.per, id) // removed
		}
	}
	h.next = (slot + 1) % h.n
}

// rate is one interval's average throughput, bytes per second.
type rate struct {
	at       time.Time // end of the interval
	to, from float64
	known    bool // both ends of the interval were sampled for the mapping
}

// minIntervals is the shortest window the graph spans: right after start
// it shows the last minute (at 5 s) rather than stretching two samples
// across the whole width.
const minIntervals = 12

// rates returns the mapping's throughput per interval, oldest first: as
// many intervals as the sampler has run (at least minIntervals, at most
// n-1), unknown ones (before the mapping existed, or before the sampler
// ran) marked so.
func (h *history) rates(id string) []rate {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.per[id]
	taken := 0
	for _, t := range h.times {
		if !t.IsZero() {
			taken++
		}
	}
	span := min(max(taken-1, minIntervals), h.n-1)
	out := make([]rate, 0, span)
	for k := h.n - span; k < h.n; k++ {
		i, j := (h.next+k-1)%h.n, (h.next+k)%h.n // j follows i
		r := rate{at: h.times[j]}
		if s != nil && s.valid[i] && s.valid[j] && !h.times[i].IsZero() && h.times[j].After(h.times[i]) {
			dt := h.times[j].Sub(h.times[i]).Seconds()
			// A counter never goes down; a mapping removed and re-added
			// under the same id would, so clamp at 0.
			r.to = max(0, float64(s.to[j]-s.to[i])/dt)
			r.from = max(0, float64(s.from[j]-s.from[i])/dt)
			r.known = true
		}
		out = append(out, r)
	}
	return out
}

// run samples every interval until ctx ends.
func (h *history) run(ctx context.Context, interval time.Duration, each trafficSource) {
	h.sample(time.Now(), each)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			h.sample(now, each)
		}
	}
}
