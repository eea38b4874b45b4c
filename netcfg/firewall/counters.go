package firewall

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/prometheus/client_golang/prometheus"
)

// Counter is what one rule has matched since the table was applied.
type Counter struct {
	Packets uint64
	Bytes   uint64
}

// Counters reads the counters of our rules, summed by name (the Counter*
// constants: "dropped", "mappings", "rate_limited", ...). A name whose rule
// is not in the table (no rate limit configured, say) is absent.
func (f *Firewall) Counters() (map[string]Counter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]Counter{}
	for _, chain := range []string{chainInput, chainForward} {
		rules, err := f.conn.GetRules(f.table, &nftables.Chain{Name: chain, Table: f.table})
		if err != nil {
			return nil, fmt.Errorf("read counters of table inet %s chain %s: %w", f.table.Name, chain, err)
		}
		for _, r := range rules {
			name, ok := userdata.GetString(r.UserData, userdata.TypeComment)
			if !ok {
				continue
			}
			for _, e := range r.Exprs {
				if ctr, ok := e.(*expr.Counter); ok {
					sum := out[name]
					sum.Packets += ctr.Packets
					sum.Bytes += ctr.Bytes
					out[name] = sum
				}
			}
		}
	}
	return out, nil
}

// Collector exports the counters as iofog_firewall_packets_total and
// iofog_firewall_bytes_total, labelled by rule, read fresh on every scrape.
func (f *Firewall) Collector() prometheus.Collector {
	return &collector{
		f:       f,
		packets: prometheus.NewDesc("iofog_firewall_packets_total", "Packets matched by each firewall rule.", []string{"rule"}, nil),
		bytes:   prometheus.NewDesc("iofog_firewall_bytes_total", "Bytes matched by each firewall rule.", []string{"rule"}, nil),
		errors:  prometheus.NewDesc("iofog_firewall_read_errors", "1 when the firewall counters could not be read at this scrape.", nil, nil),
	}
}

type collector struct {
	f                      *Firewall
	packets, bytes, errors *prometheus.Desc
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.packets
	ch <- c.bytes
	ch <- c.errors
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	m, err := c.f.Counters()
	failed := 0.0
	if err != nil {
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(c.errors, prometheus.GaugeValue, failed)
	for name, v := range m {
		ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(v.Packets), name)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(v.Bytes), name)
	}
}
