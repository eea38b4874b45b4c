package netcfg

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/eclipse-iofog/iofog-connector/atomicfile"
	"github.com/eclipse-iofog/iofog-connector/netcfg/dhcp"
)

// fileState remembers what we last wrote, to write only on change.
type fileState struct {
	resolv, hosts []byte
	setHostname   string
}

// glibc reads at most three nameservers.
const maxNameservers = 3

// dnsLocked merges DNS servers and the search domain: the config's first
// (in interface order), then each lease's. n.mu must be held.
func (n *Network) dnsLocked() ([]netip.Addr, string) {
	var dns []netip.Addr
	add := func(a netip.Addr) {
		if a.IsValid() && !slices.Contains(dns, a) {
			dns = append(dns, a)
		}
	}
	for _, ifc := range n.ifaces {
		for _, d := range ifc.cfg.DNS {
			a, _ := netip.ParseAddr(d)
			add(a)
		}
	}
	domain := ""
	for _, ifc := range n.ifaces {
		if ifc.lease == nil {
			continue
		}
		for _, a := range ifc.lease.DNS {
			add(a)
		}
		if domain == "" {
			domain = ifc.lease.Domain
		}
	}
	return dns, domain
}

// ntpServersLocked: the config's servers, else those DHCP offered, else
// the fallback. n.mu must be held.
func (n *Network) ntpServersLocked() []string {
	if len(n.opts.NTP.Servers) > 0 {
		return slices.Clone(n.opts.NTP.Servers)
	}
	var out []string
	for _, ifc := range n.ifaces {
		if ifc.lease == nil {
			continue
		}
		for _, a := range ifc.lease.NTP {
			if s := a.String(); !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	if len(out) == 0 && n.opts.NTPFallback != "" {
		out = []string{n.opts.NTPFallback}
	}
	return out
}

// chooseHostname: the config's name, else the last one DHCP offered, else
// iofog-<last three bytes of the first interface's MAC>. n.mu must be held
// or the interfaces not running yet.
func (n *Network) chooseHostname() string {
	if n.opts.Hostname != "" {
		return n.opts.Hostname
	}
	for _, ifc := range n.ifaces {
		if ifc.lease != nil && ifc.lease.Hostname != "" {
			n.dhcpHostname = ifc.lease.Hostname
			break
		}
	}
	// A name once learned from DHCP stays through carrier loss and lease
	// expiry: the box does not change its name while it is offline.
	if n.dhcpHostname != "" {
		return n.dhcpHostname
	}
	for _, ifc := range n.ifaces {
		if l, err := n.handle.LinkByName(ifc.name); err == nil {
			if mac := l.Attrs().HardwareAddr; len(mac) >= 3 {
				return fmt.Sprintf("iofog-%x", []byte(mac[len(mac)-3:]))
			}
		}
	}
	return "iofog"
}

func validHostname(s string) bool {
	return !strings.Contains(s, ".") && dhcp.ValidName(s) && len(s) <= 63
}

// applyHostname sets the kernel hostname when it changed.
func (n *Network) applyHostname() {
	n.mu.Lock()
	name, done := n.hostname, n.files.setHostname
	n.mu.Unlock()
	if name == done || n.opts.SetHostname == nil {
		return
	}
	if err := n.opts.SetHostname(name); err != nil {
		n.log.Error("set hostname", "hostname", name, "err", err)
		return
	}
	n.mu.Lock()
	n.files.setHostname = name
	n.mu.Unlock()
	n.log.Info("hostname set", "hostname", name)
}

// leaseChanged recomputes what depends on leases: hostname, files, NTP.
func (n *Network) leaseChanged() {
	n.mu.Lock()
	n.hostname = n.chooseHostname()
	n.mu.Unlock()
	n.applyHostname()
	if err := n.writeFiles(); err != nil {
		n.log.Error("write resolv.conf and hosts", "err", err)
	}
	select {
	case n.ntpKick <- struct{}{}:
	default:
	}
	n.notify()
}

// writeFiles writes RootDir/etc/resolv.conf and RootDir/etc/hosts when
// their content changed.
func (n *Network) writeFiles() error {
	n.mu.Lock()
	dns, domain := n.dnsLocked()
	resolv := renderResolv(dns, domain)
	hosts := renderHosts(n.hostname, domain)
	writeResolv := !bytes.Equal(resolv, n.files.resolv)
	writeHosts := !bytes.Equal(hosts, n.files.hosts)
	n.mu.Unlock()

	if err := os.MkdirAll(filepath.Join(n.opts.RootDir, "etc"), 0o755); err != nil {
		return fmt.Errorf("create %s/etc: %w", n.opts.RootDir, err)
	}
	if writeResolv {
		if err := atomicfile.Write(n.resolvPath(), resolv, 0o644, atomicfile.Options{}); err != nil {
			return err
		}
		n.log.Info("wrote resolv.conf", "path", n.resolvPath(), "dns", dns, "domain", domain)
	}
	if writeHosts {
		if err := atomicfile.Write(n.hostsPath(), hosts, 0o644, atomicfile.Options{}); err != nil {
			return err
		}
	}
	n.mu.Lock()
	n.files.resolv, n.files.hosts = resolv, hosts
	n.mu.Unlock()
	return nil
}

func renderResolv(dns []netip.Addr, domain string) []byte {
	var b bytes.Buffer
	b.WriteString("# Written by iofog-connector from the config and DHCP; edits are replaced.\n")
	if domain != "" {
		fmt.Fprintf(&b, "search %s\n", domain)
	}
	for i, a := range dns {
		if i == maxNameservers {
			break
		}
		fmt.Fprintf(&b, "nameserver %s\n", a)
	}
	return b.Bytes()
}

func renderHosts(hostname, domain string) []byte {
	var b bytes.Buffer
	b.WriteString("# Written by iofog-connector; edits are replaced.\n")
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	if domain != "" {
		fmt.Fprintf(&b, "127.0.1.1\t%s.%s %s\n", hostname, domain, hostname)
	} else {
		fmt.Fprintf(&b, "127.0.1.1\t%s\n", hostname)
	}
	return b.Bytes()
}
