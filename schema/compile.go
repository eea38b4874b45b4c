package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// settings is the original's settings file: exactly these five keys, in
// this order.
type settings struct {
	Ports   []string `json:"ports"`
	Exclude []string `json:"exclude"`
	Broker  int      `json:"broker"`
	Address string   `json:"address"`
	Dev     bool     `json:"dev"`
}

// CompileSettings writes the five keys the original Connector reads, in its
// order (ports, exclude, broker, address, dev), compact or indented by two
// spaces, ending in a newline. The ranges are checked again, so a Config
// built by hand cannot produce a file the original would misread.
func CompileSettings(cfg *Config, indent bool) ([]byte, error) {
	s := settings{Ports: cfg.Ports, Exclude: cfg.Exclude, Broker: cfg.Broker, Address: cfg.Address, Dev: cfg.Dev}
	if s.Ports == nil {
		s.Ports = []string{}
	}
	if s.Exclude == nil {
		s.Exclude = []string{}
	}
	for _, list := range [][]string{s.Ports, s.Exclude} {
		for _, r := range list {
			if _, _, err := ParseRange(r); err != nil {
				return nil, fmt.Errorf("compile settings: %w", err)
			}
		}
	}
	if cfg.Broker < 1 || cfg.Broker > 65535 {
		return nil, fmt.Errorf("compile settings: broker port %d is out of range 1 to 65535", cfg.Broker)
	}
	if cfg.Address == "" {
		return nil, fmt.Errorf("compile settings: address is empty")
	}
	return marshal(s, indent)
}

// appliance is everything in a Config beyond the original's five keys.
type appliance struct {
	Hostname string      `json:"hostname,omitempty"`
	Network  []Interface `json:"network"`
	NTP      NTP         `json:"ntp"`
	TLS      TLS         `json:"tls"`
	Firewall Firewall    `json:"firewall"`
	API      API         `json:"api"`
	Log      Log         `json:"log"`
	Relay    Relay       `json:"relay"`

	Discovery Discovery `json:"discovery"`
}

// CompileAppliance writes the appliance and daemon settings (everything but
// the five original keys) as indented JSON with the same field names as the
// config files.
func CompileAppliance(cfg *Config) ([]byte, error) {
	a := appliance{
		Hostname: cfg.Hostname, Network: cfg.Network, NTP: cfg.NTP, TLS: cfg.TLS,
		Firewall: cfg.Firewall, API: cfg.API, Log: cfg.Log, Relay: cfg.Relay,
		Discovery: cfg.Discovery,
	}
	if a.Network == nil {
		a.Network = []Interface{}
	}
	return marshal(a, true)
}

func marshal(v any, indent bool) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if indent {
		enc.SetIndent("", "  ")
	}
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	return buf.Bytes(), nil
}
