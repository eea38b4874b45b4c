// Package discovery announces a Connector on the local network with
// multicast DNS / DNS-SD and finds Connectors that announce themselves, so
// that an agent on the same LAN needs no address to reach one.
package discovery

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/mdns"
)

// Service is the DNS-SD service type a Connector announces.
const Service = "_iofog-connector._tcp"

// Announcement is what a Connector says about itself.
type Announcement struct {
	// Instance names this Connector among others on the LAN; default the
	// host name.
	Instance string
	// Host is the host name, answered as Host.local; default the system's.
	Host string
	// Port is the control API's port.
	Port int
	// Dev: plain HTTP API and plain TCP mapping ports; otherwise TLS.
	Dev     bool
	Version string
	// IPs to announce; default the addresses of the host name, else every
	// address of the up, non-loopback interfaces.
	IPs []net.IP
	// Iface, when set, is the only interface announced on.
	Iface *net.Interface
}

// TXT record keys.
const (
	keyMode    = "mode" // "dev" or "tls"
	keyVersion = "version"
)

// Announce answers mDNS queries for the Connector until ctx is done.
func Announce(ctx context.Context, a Announcement) error {
	if a.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("discovery: no host name to announce: %w", err)
		}
		a.Host = h
	}
	a.Host = strings.TrimSuffix(strings.TrimSuffix(a.Host, "."), ".local")
	if a.Instance == "" {
		a.Instance = a.Host
	}
	if len(a.IPs) == 0 {
		a.IPs = localIPs(a.Iface)
	}
	if len(a.IPs) == 0 {
		return fmt.Errorf("discovery: no address to announce (no interface is up)")
	}
	mode := "tls"
	if a.Dev {
		mode = "dev"
	}
	txt := []string{keyMode + "=" + mode, keyVersion + "=" + a.Version}
	zone, err := mdns.NewMDNSService(a.Instance, Service, "local.", a.Host+".local.", a.Port, a.IPs, txt)
	if err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	srv, err := mdns.NewServer(&mdns.Config{Zone: zone, Iface: a.Iface, Logger: quiet()})
	if err != nil {
		return fmt.Errorf("discovery: listen for mDNS queries on UDP 5353: %w", err)
	}
	<-ctx.Done()
	return srv.Shutdown()
}

// localIPs are the addresses of the up, non-loopback interfaces (or of
// iface only).
func localIPs(iface *net.Interface) []net.IP {
	var ifs []net.Interface
	if iface != nil {
		ifs = []net.Interface{*iface}
	} else {
		ifs, _ = net.Interfaces()
	}
	var ips []net.IP
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, ad := range addrs {
			if n, ok := ad.(*net.IPNet); ok && n.IP.IsGlobalUnicast() {
				ips = append(ips, n.IP)
			}
		}
	}
	return ips
}

// Connector is one Connector found on the LAN.
type Connector struct {
	Instance string
	Host     string // its host name, NAME.local.
	Addrs    []net.IP
	Port     int // the control API's port
	Dev      bool
	Version  string
}

// Addr is the first address (IPv4 first) to reach it at.
func (c Connector) Addr() net.IP {
	if len(c.Addrs) == 0 {
		return nil
	}
	return c.Addrs[0]
}

// maxFound bounds what one browse keeps, whatever the LAN sends.
const maxFound = 256

// Browse asks the LAN for Connectors and collects answers for timeout (or
// until ctx is done). iface, when set, is the only interface asked on.
func Browse(ctx context.Context, timeout time.Duration, iface *net.Interface) ([]Connector, error) {
	// IPv4 first, IPv6 only when IPv4 found nothing: a host without an
	// IPv6 route fails to send the IPv6 query, which must not lose the IPv4
	// answers. Both run on the calling goroutine, so the sockets belong to
	// the caller's network namespace.
	entries := make(chan *mdns.ServiceEntry, 2*maxFound)
	query := func(v6 bool) error {
		params := mdns.DefaultParams(Service)
		params.Entries = entries
		params.Timeout = timeout
		params.Interface = iface
		params.Logger = quiet()
		params.DisableIPv4, params.DisableIPv6 = v6, !v6
		return mdns.QueryContext(ctx, params)
	}
	err := query(false)
	if len(entries) == 0 && ctx.Err() == nil {
		if err6 := query(true); err == nil || err6 == nil {
			err = nil
		}
	}
	close(entries)
	seen := map[string]bool{}
	var out []Connector
	for e := range entries {
		c, ok := fromEntry(e)
		if !ok || seen[c.Instance] || len(out) >= maxFound {
			continue
		}
		seen[c.Instance] = true
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Instance < out[j].Instance })
	if err != nil && len(out) == 0 {
		return nil, fmt.Errorf("discovery: mDNS query: %w", err)
	}
	return out, nil
}

// fromEntry turns an answer into a Connector; false when it is not one
// (another service's answer, or one without an address or port).
func fromEntry(e *mdns.ServiceEntry) (Connector, bool) {
	suffix := "." + Service + ".local."
	if !strings.HasSuffix(e.Name, suffix) || e.Port <= 0 || e.Port > 65535 {
		return Connector{}, false
	}
	c := Connector{Instance: unescape(strings.TrimSuffix(e.Name, suffix)), Host: e.Host, Port: e.Port}
	if e.AddrV4 != nil {
		c.Addrs = append(c.Addrs, e.AddrV4)
	}
	if e.AddrV6IPAddr != nil {
		c.Addrs = append(c.Addrs, e.AddrV6IPAddr.IP)
	}
	if len(c.Addrs) == 0 {
		return Connector{}, false
	}
	c.Dev, c.Version = parseTXT(e.InfoFields)
	return c, true
}

// parseTXT reads the mode and version; anything else is ignored. A missing
// or unknown mode counts as TLS, the safe assumption.
func parseTXT(fields []string) (dev bool, version string) {
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		switch strings.ToLower(k) {
		case keyMode:
			dev = v == "dev"
		case keyVersion:
			if len(v) > 64 {
				v = v[:64]
			}
			version = strconv.QuoteToGraphic(v)
			version = version[1 : len(version)-1]
		}
	}
	return dev, version
}

// unescape undoes DNS escaping of an instance name ("my\ connector").
func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// quiet drops the library's own log lines (it logs every stray packet).
func quiet() *log.Logger { return log.New(io.Discard, "", 0) }
