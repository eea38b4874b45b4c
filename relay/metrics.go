package relay

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the Connector's counters, on a registry the Connector owns.
type metrics struct {
	reg *prometheus.Registry

	sessionsTotal   prometheus.Counter
	sessionsActive  prometheus.Gauge
	bytes           *prometheus.CounterVec
	toAgent         prometheus.Counter
	fromAgent       prometheus.Counter
	authFailures    prometheus.Counter
	beatTimeouts    prometheus.Counter
	waitTimeouts    prometheus.Counter
	rejectedFull    prometheus.Counter
	droppedUnpaired prometheus.Counter
	silentTimeouts  prometheus.Counter
	writeTimeouts   prometheus.Counter
	retries         prometheus.Counter
	beatsInPayload  prometheus.Counter
	refused         [nLimits]prometheus.Counter // new connections closed at once, by limit
	evicted         [nLimits]prometheus.Counter // oldest pending connections closed to make room
}

// The limits on what strangers can hold (relay.max_*), as metric labels.
const (
	limConnections = iota
	limUnauthenticated
	limWaiting
	nLimits
)

var limitNames = [nLimits]string{"connections", "unauthenticated", "waiting"}

// snapshot is what the collector reads from the Connector at scrape time.
type snapshot struct {
	publicMappings, privateMappings int
	freePorts                       int
	idle, paired                    int
}

// stateCollector exports gauges computed at scrape time, so the data path
// keeps no extra counters for them.
type stateCollector struct {
	snap                            func() snapshot
	mappings, freePorts, agentConns *prometheus.Desc
}

func (s *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.mappings
	ch <- s.freePorts
	ch <- s.agentConns
}

func (s *stateCollector) Collect(ch chan<- prometheus.Metric) {
	v := s.snap()
	ch <- prometheus.MustNewConstMetric(s.mappings, prometheus.GaugeValue, float64(v.publicMappings), "public")
	ch <- prometheus.MustNewConstMetric(s.mappings, prometheus.GaugeValue, float64(v.privateMappings), "private")
	ch <- prometheus.MustNewConstMetric(s.freePorts, prometheus.GaugeValue, float64(v.freePorts))
	ch <- prometheus.MustNewConstMetric(s.agentConns, prometheus.GaugeValue, float64(v.idle), "idle")
	ch <- prometheus.MustNewConstMetric(s.agentConns, prometheus.GaugeValue, float64(v.paired), "paired")
}

func newMetrics(snap func() snapshot, extra []prometheus.Collector) (*metrics, error) {
	const ns = "iofog_connector"
	m := &metrics{reg: prometheus.NewRegistry()}
	m.sessionsTotal = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "public_sessions_total",
		Help: "Public clients paired with an agent connection."})
	m.sessionsActive = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "public_sessions_active",
		Help: "Public sessions in progress."})
	m.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "relayed_bytes_total",
		Help: "Payload bytes relayed, by direction: to_agent (into agent connections) or from_agent."}, []string{"direction"})
	m.toAgent = m.bytes.WithLabelValues("to_agent")
	m.fromAgent = m.bytes.WithLabelValues("from_agent")
	m.authFailures = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "auth_failures_total",
		Help: "Agent connections closed for a wrong, short or late passcode."})
	m.beatTimeouts = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "heartbeat_timeouts_total",
		Help: "Agent connections closed after staying silent longer than their heartbeat absence threshold."})
	m.waitTimeouts = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "public_wait_timeouts_total",
		Help: "Public clients closed because no agent connection came free within the wait."})
	m.rejectedFull = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "agent_rejected_full_total",
		Help: "Authenticated agent connections refused because the mapping already held maxconnections."})
	m.droppedUnpaired = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "dropped_unpaired_bytes_total",
		Help: "Payload bytes from an agent connection with nobody on the other side, dropped."})
	m.silentTimeouts = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "public_silent_timeouts_total",
		Help: "Public clients closed for sending nothing within relay.public_wait."})
	m.writeTimeouts = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "write_timeouts_total",
		Help: "Sessions closed because a peer took no bytes for relay.write_timeout."})
	m.retries = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "public_session_moves_total",
		Help: "Public clients moved, with their first bytes, to another agent connection because theirs died before answering."})
	m.beatsInPayload = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "heartbeats_in_payload_total",
		Help: "Reads from an agent with payload that began or ended with BEAT; those BEATs were taken as heartbeats and stripped."})
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "connections_refused_total",
		Help: "New data connections closed at once because a limit was reached, by limit (connections, unauthenticated, waiting)."}, []string{"limit"})
	evicted := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "connections_evicted_total",
		Help: "Oldest unauthenticated or silent connections closed to make room for a new one, by limit."}, []string{"limit"})
	for i, name := range limitNames {
		m.refused[i] = refused.WithLabelValues(name)
		m.evicted[i] = evicted.WithLabelValues(name)
	}
	sc := &stateCollector{
		snap:       snap,
		mappings:   prometheus.NewDesc(ns+"_mappings", "Mappings, by type.", []string{"type"}, nil),
		freePorts:  prometheus.NewDesc(ns+"_free_ports", "Ports left in the pool.", nil, nil),
		agentConns: prometheus.NewDesc(ns+"_agent_connections", "Authenticated agent connections, by state (idle: pooled or waiting for a peer; paired: carrying a session or a private route).", []string{"state"}, nil),
	}
	cs := []prometheus.Collector{m.sessionsTotal, m.sessionsActive, m.bytes, m.authFailures, m.beatTimeouts,
		m.waitTimeouts, m.rejectedFull, m.droppedUnpaired, m.silentTimeouts, m.writeTimeouts, m.retries, m.beatsInPayload,
		refused, evicted, sc,
		// Goroutines, heap, open file descriptors and RSS: what an operator
		// checks when the number of agent connections grows.
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})}
	for _, c := range append(cs, extra...) {
		if err := m.reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
