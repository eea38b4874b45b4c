package relay

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// This file holds what the Connector shows of itself to readers other than
// the control API (the status page): read-only views of the mappings, the
// per-mapping totals behind them, and a short history of events. Nothing
// here carries a passcode.

// tally is one mapping's running totals. The data path updates it through
// the count* methods below, which also update the Connector-wide Prometheus
// counters, so /metrics and the per-mapping figures come from the same
// calls and cannot disagree.
type tally struct {
	toAgent   atomic.Int64 // payload bytes written into agent connections
	fromAgent atomic.Int64 // payload bytes read from agent connections and delivered
	sessions  atomic.Int64 // public sessions ever paired
	seen      atomic.Int64 // unix nanos of the last sign of life from an agent; 0: never
}

func (m *mapping) countToAgent(n int64) {
	if n > 0 {
		m.tally.toAgent.Add(n)
		m.c.met.toAgent.Add(float64(n))
	}
}

func (m *mapping) countFromAgent(n int64) {
	if n > 0 {
		m.tally.fromAgent.Add(n)
		m.c.met.fromAgent.Add(float64(n))
	}
}

func (m *mapping) countSession() {
	m.tally.sessions.Add(1)
	m.c.met.sessionsTotal.Inc()
}

func (m *mapping) agentSeen(t time.Time) { m.tally.seen.Store(t.UnixNano()) }

// SideView is one side of a private route.
type SideView struct {
	Port      uint16
	Connected bool   // an authenticated agent holds this side
	Remote    string // its address, when connected
}

// MappingView is one mapping as a person reads it. It has no passcodes.
type MappingView struct {
	ID                       string
	Type                     string // "public" or "private"
	Port1, Port2             uint16
	Max1, Max2               int // maxconnections per port
	Listening1, Listening2   bool
	AgentsIdle, AgentsPaired int
	SessionsNow              int64 // public sessions in progress
	SessionsTotal            int64 // public sessions since the Connector started
	BytesToAgent             int64
	BytesFromAgent           int64
	LastAgentSeen            time.Time // zero: no agent since the Connector started
	Sides                    [2]SideView
}

// Mappings returns every mapping, in store order, with live counts. It
// reads what `mapping list` reads, plus the per-mapping totals.
func (c *Connector) Mappings() []MappingView {
	c.mu.Lock()
	ms := make([]*mapping, 0, len(c.order))
	for _, id := range c.order {
		ms = append(ms, c.mappings[id])
	}
	c.mu.Unlock()
	out := make([]MappingView, 0, len(ms))
	for _, m := range ms {
		idle, paired := m.counts()
		v := MappingView{
			ID: m.rec.ID, Type: m.kind(), Port1: m.rec.Port1, Port2: m.rec.Port2,
			Max1: m.rec.MaxConnectionsPort1, Max2: m.rec.MaxConnectionsPort2,
			Listening1: m.active(0), Listening2: m.active(1),
			AgentsIdle: idle, AgentsPaired: paired,
			SessionsNow: m.sessions.Load(), SessionsTotal: m.tally.sessions.Load(),
			BytesToAgent: m.tally.toAgent.Load(), BytesFromAgent: m.tally.fromAgent.Load(),
		}
		if ns := m.tally.seen.Load(); ns != 0 {
			v.LastAgentSeen = time.Unix(0, ns)
		}
		for i := range 2 {
			v.Sides[i].Port = m.port(i)
			if !m.public {
				if a := m.priv[i].Load(); a != nil {
					v.Sides[i].Connected, v.Sides[i].Remote = true, a.remote.String()
				}
			}
		}
		out = append(out, v)
	}
	return out
}

// Overview is the Connector as a whole.
type Overview struct {
	Version      string
	Dev          bool // plain HTTP and TCP; else TLS everywhere
	APIPort      int
	PoolSize     int
	FreePorts    int
	Mappings     int
	CertNotAfter time.Time // zero in dev mode
}

// Overview returns the Connector's version, mode, pool and certificate
// expiry.
func (c *Connector) Overview() Overview {
	o := Overview{Version: c.opts.Version, Dev: c.cfg.Dev, APIPort: c.cfg.API.Port(c.cfg.Dev)}
	if c.apiTLS != nil && len(c.apiTLS.Certificates) > 0 {
		if leaf := c.apiTLS.Certificates[0].Leaf; leaf != nil {
			o.CertNotAfter = leaf.NotAfter
		}
	}
	c.mu.Lock()
	o.PoolSize, o.FreePorts, o.Mappings = c.pool.Size(), c.pool.Free(), len(c.mappings)
	c.mu.Unlock()
	return o
}

// Metrics is the registry /metrics serves, for readers that want the same
// figures in-process.
func (c *Connector) Metrics() prometheus.Gatherer { return c.met.reg }

// HandleRoot serves h at GET / on the API port, beside the control API.
// Call it before Run.
func (c *Connector) HandleRoot(h http.Handler) { c.page = h }

// Event is something that happened to the Connector that a person may want
// to know about afterwards.
type Event struct {
	Time    time.Time
	Kind    string // started, added, removed, refused, timeout
	Mapping string // mapping id, "" for the Connector as a whole
	Text    string
	Remote  string // the last remote address involved, if any
	Count   int    // how many times it happened in a row (coalesced)
}

// Events returns the most recent events, newest first.
func (c *Connector) Events() []Event { return c.events.list() }

// eventCap bounds the history. A stranger can cause refusals at will, so
// repeats are coalesced (see add) and the ring never grows.
const eventCap = 64

// coalesceWithin: a repeat of one of the last few events within this time
// bumps its count instead of taking a new slot.
const (
	coalesceWithin = time.Minute
	coalesceDepth  = 8
)

type eventRing struct {
	mu   sync.Mutex
	buf  [eventCap]Event
	next int // where the next event goes
	n    int
}

func (r *eventRing) add(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if e.Count == 0 {
		e.Count = 1
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := 1; k <= min(r.n, coalesceDepth); k++ {
		p := &r.buf[(r.next-k+eventCap)%eventCap]
		if p.Kind == e.Kind && p.Mapping == e.Mapping && p.Text == e.Text && e.Time.Sub(p.Time) < coalesceWithin {
			p.Count += e.Count
			p.Time, p.Remote = e.Time, e.Remote
			return
		}
	}
	r.buf[r.next] = e
	r.next = (r.next + 1) % eventCap
	r.n = min(r.n+1, eventCap)
}

func (r *eventRing) list() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Event, 0, r.n)
	for k := 1; k <= r.n; k++ {
		out = append(out, r.buf[(r.next-k+eventCap)%eventCap])
	}
	// Coalescing moves an older slot's time forward; keep newest first.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].Time.After(out[j-1].Time); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func (c *Connector) noteStarted() {
	c.events.add(Event{Kind: "started", Text: "Connector started (version " + c.opts.Version + ")"})
}

func (c *Connector) noteAdded(r Record) {
	kind := "public"
	if !r.Public() {
		kind = "private"
	}
	c.events.add(Event{Kind: "added", Mapping: r.ID, Text: fmt.Sprintf("%s mapping added on ports %d and %d", kind, r.Port1, r.Port2)})
}

func (c *Connector) noteRemoved(r Record) {
	c.events.add(Event{Kind: "removed", Mapping: r.ID, Text: fmt.Sprintf("mapping on ports %d and %d removed", r.Port1, r.Port2)})
}

// noteRefused records a connection the mapping turned away; why must not
// depend on the remote (it is the coalescing key).
func (m *mapping) noteRefused(port uint16, remote, why string) {
	m.c.events.add(Event{Kind: "refused", Mapping: m.rec.ID, Remote: remote, Text: fmt.Sprintf("port %d: %s", port, why)})
}

func (m *mapping) noteTimeout(port uint16, remote string) {
	m.c.events.add(Event{Kind: "timeout", Mapping: m.rec.ID, Remote: remote,
		Text: fmt.Sprintf("port %d: agent connection silent past its heartbeat threshold; closed", port)})
}

// EachTraffic calls fn with every mapping's byte totals, in store order.
// It reads two counters per mapping and allocates nothing, so a sampler
// can call it often; fn runs under the Connector's lock and must not call
// back into the Connector.
func (c *Connector) EachTraffic(fn func(id string, toAgent, fromAgent int64)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range c.order {
		m := c.mappings[id]
		fn(id, m.tally.toAgent.Load(), m.tally.fromAgent.Load())
	}
}
