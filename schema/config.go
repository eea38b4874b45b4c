// Package schema owns the Connector's configuration: the CUE schema that is
// the single source of truth, loaders for JSON, CUE and HCL, and the compiler
// to the original's JSON settings file.
package schema

import (
	"fmt"
	"net/netip"
	"time"
)

// Config is a validated configuration. The first five fields are the ioFog
// Connector settings, byte-compatible with the original's settings file; the
// rest are appliance and daemon extensions, all optional with defaults filled
// in by Load. JSON tags spell the names as the config files do.
type Config struct {
	// The five keys of the original iofog-connector.conf.
	Ports   []string `json:"ports"`
	Exclude []string `json:"exclude"`
	Broker  int      `json:"broker"`
	Address string   `json:"address"`
	Dev     bool     `json:"dev"`

	Hostname string      `json:"hostname,omitempty"`
	Network  []Interface `json:"network,omitempty"` // none: the first Ethernet interface, DHCP
	NTP      NTP         `json:"ntp"`
	TLS      TLS         `json:"tls"`
	Firewall Firewall    `json:"firewall"`
	API      API         `json:"api"`
	Log      Log         `json:"log"`
	Relay    Relay       `json:"relay"`

	Discovery Discovery `json:"discovery"`
	Update    Update    `json:"update"`
}

// Interface configures one network interface. An empty Name means the first
// Ethernet interface the kernel offers.
type Interface struct {
	Name      string   `json:"name,omitempty"`
	DHCP      bool     `json:"dhcp"`
	Addresses []string `json:"addresses,omitempty"` // CIDR, IPv4 or IPv6
	Gateway   string   `json:"gateway,omitempty"`   // IPv4 default route
	Gateway6  string   `json:"gateway6,omitempty"`  // IPv6 default route
	DNS       []string `json:"dns,omitempty"`
	Routes    []Route  `json:"routes,omitempty"`
	AcceptRA  bool     `json:"accept_ra"` // IPv6 SLAAC from router advertisements
}

// Route is an extra static route.
type Route struct {
	To  string `json:"to"`  // CIDR
	Via string `json:"via"` // gateway address
}

// NTP lists SNTP servers; empty means the servers DHCP offers, then a default.
type NTP struct {
	Servers []string `json:"servers,omitempty"`
}

// TLS says where the non-dev mode's certificate comes from.
type TLS struct {
	// Mode is "auto" (the default: use server-cert.pem and server-key.pem
	// when present; the appliance generates a self-signed pair when they are
	// missing, the plain daemon refuses to start), "files" (they must exist)
	// or "generate" (make a self-signed pair for Names and IPs when none
	// exists).
	Mode  string   `json:"mode"`
	Names []string `json:"names,omitempty"`
	IPs   []string `json:"ips,omitempty"`
}

// Firewall configures the nftables table the Connector owns.
type Firewall struct {
	// Enabled is nil when the config does not say: on for the appliance, off
	// on a plain host.
	Enabled *bool `json:"enabled,omitempty"`
	// RateLimit is new connections per second per source address allowed on
	// mapping ports; 0 turns the limit off. Burst is the allowed burst.
	RateLimit int       `json:"rate_limit"`
	Burst     int       `json:"burst"`
	Forward   []Forward `json:"forward,omitempty"`
}

// On reports whether the firewall is on, given whether we are the appliance.
func (f Firewall) On(appliance bool) bool {
	if f.Enabled != nil {
		return *f.Enabled
	}
	return appliance
}

// Forward is a DNAT port forward for gateway deployments.
type Forward struct {
	Interface string `json:"interface"`         // inbound interface
	Protocol  string `json:"protocol"`          // "tcp" or "udp"
	Ports     string `json:"ports"`             // "N" or "A-B"
	To        string `json:"to"`                // target host address
	ToPort    int    `json:"to_port,omitempty"` // first target port; 0 = same as Ports
}

// API configures the control API listener.
type API struct {
	Listen    string `json:"listen,omitempty"` // bind address; "" = all
	HTTPPort  int    `json:"http_port"`        // dev mode, default 8080
	HTTPSPort int    `json:"https_port"`       // TLS mode, default 443
	// Allow lists the source addresses and CIDR networks that may use the
	// API and /metrics; empty means everyone. Loopback is always allowed.
	Allow []string `json:"allow,omitempty"`
	// ReadTimeout bounds reading one whole request (headers and body);
	// IdleTimeout closes a kept-alive connection idle that long. Zero
	// means the default (30s, 2m).
	ReadTimeout Duration `json:"read_timeout"`
	IdleTimeout Duration `json:"idle_timeout"`
}

// ParseAllow parses one api.allow entry: an IP address (a network of that
// one address) or a network in CIDR notation. Host bits of a network are
// ignored ("10.1.2.3/8" is 10.0.0.0/8). IPv4-mapped IPv6 addresses count as
// IPv4.
func ParseAllow(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q: an address with a zone cannot be allowed; give the address alone", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or a network in CIDR notation (\"192.0.2.10\", \"10.0.0.0/8\", \"fd00::/64\")", s)
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// Port returns the API port in effect for the given mode.
func (a API) Port(dev bool) int {
	if dev {
		return a.HTTPPort
	}
	return a.HTTPSPort
}

// Log configures logging.
type Log struct {
	Level   string `json:"level"`        // debug, info, warn, error
	File    bool   `json:"file"`         // also log to a file (boot partition on the appliance)
	MaxSize int    `json:"max_size_kib"` // cap per file before rotation
}

// Relay holds data-plane tunables beyond the original's keys.
type Relay struct {
	// PublicWait is how long a public client waits for a free agent
	// connection before it is closed (docs/protocol.md §6.5). Default 10s.
	PublicWait Duration `json:"public_wait"`
	// WriteTimeout bounds one blocked write to a peer. Default 60s.
	WriteTimeout Duration `json:"write_timeout"`
	// MaxConnections bounds data connections overall. Default 16384.
	MaxConnections int `json:"max_connections"`
	// MaxUnauthenticated bounds connections per agent port that have not
	// authenticated yet. Default 256.
	MaxUnauthenticated int `json:"max_unauthenticated"`
	// MaxWaiting bounds unpaired public clients per mapping. Default 256.
	MaxWaiting int `json:"max_waiting"`
	// LogInterval is how often a repeated peer-caused log line is
	// summarised. Default 10s.
	LogInterval Duration `json:"log_interval"`
}

// Duration is a time.Duration written as a Go duration string ("10s") in
// JSON, CUE and HCL alike.
type Duration struct{ time.Duration }

// Discovery configures the mDNS / DNS-SD announcement.
type Discovery struct {
	Enabled bool `json:"enabled"`
}

// Update configures in-place updates of the appliance.
type Update struct {
	// Keys are extra public keys ("ed25519:BASE64") bundles may be
	// signed with, besides those the image carries.
	Keys []string `json:"keys,omitempty"`
	// CommitAfter is how long a new system must stay healthy after its
	// trial boot before it commits itself. Default 2m.
	CommitAfter Duration `json:"commit_after"`
}
