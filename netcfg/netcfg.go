// Package netcfg puts the appliance on the network: it brings up lo and the
// configured interfaces, waits for carrier, applies static addresses and
// routes or runs a DHCPv4 client per interface, lets the kernel do IPv6
// SLAAC where asked, writes /etc/resolv.conf and /etc/hosts, sets the
// hostname, and keeps the clock right with SNTP and a "last known time"
// file. Everything goes through netlink and system calls; no ip, dhclient
// or ntpd binary is needed. The firewall lives in the subpackage firewall.
//
// # API for PID 1
//
//	net, err := netcfg.Start(ctx, netcfg.Options{
//		Interfaces:  cfg.Network,            // empty: DHCP on the first Ethernet interface
//		Hostname:    cfg.Hostname,           // empty: DHCP's, else iofog-<last 3 MAC bytes>
//		NTP:         cfg.NTP,                // empty: DHCP's servers, else NTPFallback
//		NTPFallback: "pool.ntp.org",
//		RootDir:     "/",                    // resolv.conf and hosts go to RootDir/etc
//		TimeFile:    "/boot/state/last-time",
//		Logger:      log,
//		SetHostname: netcfg.SetSystemHostname, // nil: compute, but do not set
//		SetClock:    netcfg.SetSystemClock,    // nil: measure, but do not set
//	})
//	...
//	for range net.Changes() { writeStatus(net.State()) } // coalesced notifications
//	net.Close()                                         // saves the time file
//
// Start returns once the links are up and have carrier (or CarrierTimeout
// passed), static configuration is applied and the clock is restored from
// the time file; DHCP and SNTP carry on in the background, for as long as
// ctx lives. State reads the current addresses from the kernel (so SLAAC
// addresses are included) along with gateways, DNS, hostname and clock
// status. WaitAddress blocks until every interface has a global address.
//
// On carrier loss an interface's DHCP lease is dropped (address and routes
// removed) and DHCP starts over when the carrier returns; static
// configuration is re-applied then.
package netcfg

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/eclipse-iofog/iofog-connector/schema"
)

// Options configure Start. Zero values are sensible defaults, except that
// SetHostname and SetClock must be given for anything to be set.
type Options struct {
	Interfaces []schema.Interface
	Hostname   string
	NTP        schema.NTP
	// NTPFallback is used when neither the config nor DHCP names a server.
	// Empty: no SNTP until one is known.
	NTPFallback string
	// RootDir is where etc/resolv.conf and etc/hosts are written. Default "/".
	RootDir string
	// TimeFile keeps the last known time across boots; empty: none.
	TimeFile string
	Logger   *slog.Logger

	// SetHostname and SetClock change the system; nil leaves it alone.
	// The appliance passes SetSystemHostname and SetSystemClock.
	SetHostname func(string) error
	SetClock    func(time.Time) error

	// CarrierTimeout bounds how long Start waits for carrier. Default 10s.
	CarrierTimeout time.Duration
	// SyncInterval is the time between SNTP corrections. Default 1h.
	SyncInterval time.Duration
	// SaveInterval is the time between writes of TimeFile. Default 15m.
	SaveInterval time.Duration
	// StepThreshold: offsets smaller than this are left alone. Default 128ms.
	StepThreshold time.Duration

	// NetNS is the network namespace to configure; 0 means ours. Tests use it.
	NetNS netns.NsHandle
	// DHCPTimeout is one DHCP message's answer timeout. Default 4s.
	DHCPTimeout time.Duration
}

// State is a snapshot of the network, for STATUS.txt and logs.
type State struct {
	Hostname   string
	Interfaces []InterfaceState
	DNS        []netip.Addr // in resolv.conf order
	Domain     string
	NTPServers []string
	Clock      ClockState
}

// InterfaceState is one interface.
type InterfaceState struct {
	Name      string
	MAC       string
	Carrier   bool
	Addresses []netip.Prefix // global addresses now on the link (static, DHCP, SLAAC)
	Gateway   netip.Addr     // IPv4 default route we installed
	Gateway6  netip.Addr     // IPv6 default route we installed
	DHCP      bool
	Lease     *LeaseState // nil when not bound
}

// LeaseState is the DHCP lease on an interface.
type LeaseState struct {
	Address netip.Prefix
	Server  netip.Addr
	Expires time.Time
}

// ClockState reports time keeping.
type ClockState struct {
	Restored time.Time     // clock set from TimeFile at boot (zero: not needed)
	Synced   time.Time     // last successful SNTP measurement
	Server   string        // server used then
	Offset   time.Duration // offset measured then (before correction)
	Err      string        // last SNTP failure, "" after a success
}

// Network runs the network configuration until Close or ctx ends.
type Network struct {
	opts   Options
	log    *slog.Logger
	handle *netlink.Handle
	cancel context.CancelFunc
	wg     sync.WaitGroup

	changes chan struct{} // buffered 1: coalesced notifications for Changes
	ntpKick chan struct{} // buffered 1: NTP server list may have changed

	mu       sync.Mutex // guards the fields below
	ifaces   []*iface
	hostname string
	// dhcpHostname is the last hostname a lease offered.
	dhcpHostname string
	clock        ClockState
	files        fileState
	closed       bool
}

// Start brings the network up as described in the package doc.
func Start(ctx context.Context, o Options) (*Network, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.RootDir == "" {
		o.RootDir = "/"
	}
	if o.CarrierTimeout == 0 {
		o.CarrierTimeout = 10 * time.Second
	}
	if o.SyncInterval == 0 {
		o.SyncInterval = time.Hour
	}
	if o.SaveInterval == 0 {
		o.SaveInterval = 15 * time.Minute
	}
	if o.StepThreshold == 0 {
		o.StepThreshold = 128 * time.Millisecond
	}
	if o.Hostname != "" && !validHostname(o.Hostname) {
		return nil, fmt.Errorf("hostname %q: use letters, digits and hyphens (at most 63), not starting or ending with a hyphen", o.Hostname)
	}
	if len(o.Interfaces) == 0 {
		o.Interfaces = []schema.Interface{{DHCP: true, AcceptRA: true}}
	}
	for i, ic := range o.Interfaces {
		if err := checkInterface(ic); err != nil {
			return nil, fmt.Errorf("network[%d]: %w", i, err)
		}
	}
	var h *netlink.Handle
	var err error
	// Route netlink only: asking for every family would also open XFRM and
	// netfilter sockets, and fail on kernels without those modules loaded.
	if o.NetNS != 0 {
		h, err = netlink.NewHandleAt(o.NetNS, unix.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	n := &Network{
		opts: o, log: o.Logger, handle: h, cancel: cancel,
		changes: make(chan struct{}, 1), ntpKick: make(chan struct{}, 1),
	}
	fail := func(err error) (*Network, error) {
		cancel()
		n.wg.Wait()
		h.Close()
		return nil, err
	}

	n.restoreClock()

	if err := n.bringUpLoopback(); err != nil {
		return fail(err)
	}
	names, err := n.resolveNames(ctx)
	if err != nil {
		return fail(err)
	}
	carrier := make(chan struct{}, len(names))
	for i, name := range names {
		ifc := &iface{n: n, cfg: o.Interfaces[i], name: name, log: n.log.With("interface", name)}
		n.ifaces = append(n.ifaces, ifc)
	}
	n.hostname = n.chooseHostname()
	n.applyHostname()
	if err := n.writeFiles(); err != nil {
		n.log.Error("write resolv.conf and hosts", "err", err)
	}
	for _, ifc := range n.ifaces {
		n.wg.Go(func() { ifc.run(ctx, carrier) })
	}

	// Wait for every link's carrier, or the timeout: a board with its cable
	// unplugged must still boot and say so in STATUS.txt.
	timer := time.NewTimer(o.CarrierTimeout)
	defer timer.Stop()
	for waiting := len(names); waiting > 0; waiting-- {
		select {
		case <-carrier:
		case <-timer.C:
			n.log.Warn("no carrier yet; continuing, the link is configured when it comes up", "timeout", o.CarrierTimeout)
			waiting = 0
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	}
	n.wg.Go(func() { n.runClock(ctx) })
	n.notify()
	return n, nil
}

// Close stops DHCP and SNTP, saves the time file and releases resources.
// Addresses stay configured (the box is going down or handing over).
func (n *Network) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	n.cancel()
	n.wg.Wait()
	err := n.saveTime()
	n.handle.Close()
	return err
}

// Changes delivers a value whenever the state may have changed (carrier,
// address, lease, hostname, clock). Notifications are coalesced: read
// State after each one. There is one channel; use it from one goroutine.
func (n *Network) Changes() <-chan struct{} { return n.changes }

func (n *Network) notify() {
	select {
	case n.changes <- struct{}{}:
	default:
	}
}

// State returns the current state; addresses come from the kernel.
func (n *Network) State() State {
	n.mu.Lock()
	s := State{Hostname: n.hostname, Clock: n.clock}
	s.DNS, s.Domain = n.dnsLocked()
	s.NTPServers = n.ntpServersLocked()
	for _, ifc := range n.ifaces {
		is := InterfaceState{Name: ifc.name, MAC: ifc.mac, Carrier: ifc.carrier, DHCP: ifc.cfg.DHCP,
			Gateway: ifc.gateway, Gateway6: ifc.gateway6}
		if l := ifc.lease; l != nil {
			is.Lease = &LeaseState{Address: l.Address, Server: l.Server, Expires: l.ExpiresAt()}
			if gw, ok := l.Gateway(); ok {
				is.Gateway = gw
			}
		}
		s.Interfaces = append(s.Interfaces, is)
	}
	n.mu.Unlock()
	for i := range s.Interfaces {
		s.Interfaces[i].Addresses = n.globalAddrs(s.Interfaces[i].Name)
	}
	return s
}

// WaitAddress returns when every interface has a global address, or with
// ctx's error.
func (n *Network) WaitAddress(ctx context.Context) error {
	for {
		ok := true
		for _, is := range n.State().Interfaces {
			ok = ok && len(is.Addresses) > 0
		}
		if ok {
			return nil
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (n *Network) globalAddrs(name string) []netip.Prefix {
	l, err := n.handle.LinkByName(name)
	if err != nil {
		return nil
	}
	addrs, err := n.handle.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if a.Scope != int(netlink.SCOPE_UNIVERSE) || a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ip.Unmap(), ones))
	}
	return out
}

func (n *Network) bringUpLoopback() error {
	lo, err := n.handle.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := n.handle.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	return nil
}

// resolveNames maps each configured interface to a link name. An empty
// name means the first Ethernet link not named elsewhere; it may take a
// moment for a driver to register it, so we wait up to CarrierTimeout.
func (n *Network) resolveNames(ctx context.Context) ([]string, error) {
	names := make([]string, len(n.opts.Interfaces))
	deadline := time.Now().Add(n.opts.CarrierTimeout)
	for {
		taken := map[string]bool{}
		for i, ic := range n.opts.Interfaces {
			names[i] = ic.Name
			taken[ic.Name] = true
		}
		links, err := n.handle.LinkList()
		if err != nil {
			return nil, fmt.Errorf("list links: %w", err)
		}
		slices.SortFunc(links, func(a, b netlink.Link) int { return a.Attrs().Index - b.Attrs().Index })
		missing := false
		for i := range names {
			if names[i] != "" {
				continue
			}
			for _, l := range links {
				if isEthernet(l) && !taken[l.Attrs().Name] {
					names[i] = l.Attrs().Name
					taken[names[i]] = true
					break
				}
			}
			missing = missing || names[i] == ""
		}
		if !missing {
			return names, nil
		}
		if time.Now().After(deadline) {
			var present []string
			for _, l := range links {
				present = append(present, l.Attrs().Name+" ("+l.Type()+")")
			}
			return nil, fmt.Errorf("no Ethernet interface found (links: %v); name one in the config's network section", present)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// isEthernet: a physical NIC ("device") or a veth (VMs and containers), with
// an Ethernet link layer. Bridges, tunnels, loopback and the like are not,
// and neither is Wi-Fi (it looks like Ethernet to the kernel, but without
// credentials it never gets a carrier; a Pi has both).
func isEthernet(l netlink.Link) bool {
	a := l.Attrs()
	if a.EncapType != "ether" || (l.Type() != "device" && l.Type() != "veth") || a.Flags&net.FlagLoopback != 0 {
		return false
	}
	for _, dir := range []string{"wireless", "phy80211"} {
		if _, err := os.Stat(filepath.Join("/sys/class/net", a.Name, dir)); err == nil {
			return false
		}
	}
	return true
}

func checkInterface(ic schema.Interface) error {
	if len(ic.Name) >= unix.IFNAMSIZ {
		return fmt.Errorf("name %q is longer than %d characters", ic.Name, unix.IFNAMSIZ-1)
	}
	for _, a := range ic.Addresses {
		if _, err := netip.ParsePrefix(a); err != nil {
			return fmt.Errorf("address %q: want CIDR, e.g. 192.168.1.10/24", a)
		}
	}
	if ic.Gateway != "" {
		if a, err := netip.ParseAddr(ic.Gateway); err != nil || !a.Is4() {
			return fmt.Errorf("gateway %q: want an IPv4 address", ic.Gateway)
		}
	}
	if ic.Gateway6 != "" {
		if a, err := netip.ParseAddr(ic.Gateway6); err != nil || !a.Is6() {
			return fmt.Errorf("gateway6 %q: want an IPv6 address", ic.Gateway6)
		}
	}
	for _, d := range ic.DNS {
		if _, err := netip.ParseAddr(d); err != nil {
			return fmt.Errorf("dns %q: want an IP address", d)
		}
	}
	for j, r := range ic.Routes {
		to, err1 := netip.ParsePrefix(r.To)
		via, err2 := netip.ParseAddr(r.Via)
		if err1 != nil || err2 != nil || to.Addr().Is4() != via.Is4() {
			return fmt.Errorf("routes[%d]: want to: CIDR and via: an address of the same family, got %q via %q", j, r.To, r.Via)
		}
	}
	return nil
}

func (n *Network) resolvPath() string { return filepath.Join(n.opts.RootDir, "etc", "resolv.conf") }
func (n *Network) hostsPath() string  { return filepath.Join(n.opts.RootDir, "etc", "hosts") }

// SetSystemHostname sets the kernel hostname (of the caller's UTS namespace).
func SetSystemHostname(name string) error {
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("sethostname %q: %w", name, err)
	}
	return nil
}

// SetSystemClock sets the system clock (CLOCK_REALTIME).
func SetSystemClock(t time.Time) error {
	tv := unix.NsecToTimeval(t.UnixNano())
	if err := unix.Settimeofday(&tv); err != nil {
		return fmt.Errorf("settimeofday %s: %w", t.Format(time.RFC3339), err)
	}
	return nil
}
