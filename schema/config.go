// Package schema owns the Connector's configuration: the CUE schema that is
// the single source of truth, loaders for JSON, CUE and HCL, and the compiler
// to the original's JSON settings file.
package schema

import "time"

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
	Update   Update      `json:"update"`
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
	// connection before it is closed (PROTOCOL.md §7.5). Default 10s.
	PublicWait Duration `json:"public_wait"`
}

// Duration is a time.Duration written as a Go duration string ("10s") in
// JSON, CUE and HCL alike.
type Duration struct{ time.Duration }

// Update configures in-place updates of the appliance.
type Update struct {
	// Keys are extra public keys ("ed25519:BASE64") bundles may be
	// signed with, besides those the image carries.
	Keys []string `json:"keys,omitempty"`
	// CommitAfter is how long a new system must stay healthy after its
	// trial boot before it commits itself. Default 2m.
	CommitAfter Duration `json:"commit_after"`
}
