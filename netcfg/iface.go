package netcfg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/eclipse-iofog/iofog-connector/netcfg/dhcp"
	"github.com/eclipse-iofog/iofog-connector/netcfg/internal/nsutil"
	"github.com/eclipse-iofog/iofog-connector/schema"
)

// iface runs one interface: link state, static config, DHCP.
type iface struct {
	n    *Network
	cfg  schema.Interface
	name string
	log  *slog.Logger

	// Guarded by n.mu.
	mac      string
	carrier  bool
	lease    *dhcp.Lease
	gateway  netip.Addr // static IPv4 default gateway in force
	gateway6 netip.Addr
}

// Route protocol numbers (linux/rtnetlink.h), so `ip route` shows who
// installed what.
const (
	protoStatic = unix.RTPROT_STATIC
	protoDHCP   = 16 // RTPROT_DHCP
)

// metric keeps each interface's default routes apart, so two interfaces do
// not replace each other's; the one with the lower kernel index wins.
func (i *iface) metric(index int) int { return 100 + index }

// subscribe delivers link updates (the current state first) until ctx
// ends. If the kernel socket fails, it subscribes again a second later:
// the updates are how carrier loss and return are noticed.
func (i *iface) subscribe(ctx context.Context) <-chan netlink.LinkUpdate {
	out := make(chan netlink.LinkUpdate)
	go func() {
		defer close(out)
		for ctx.Err() == nil {
			updates := make(chan netlink.LinkUpdate, 32)
			done := make(chan struct{})
			opts := netlink.LinkSubscribeOptions{
				ListExisting: true,
				ErrorCallback: func(err error) {
					if ctx.Err() == nil {
						i.log.Error("link updates", "err", err)
					}
				},
			}
			if i.n.opts.NetNS != 0 {
				ns := i.n.opts.NetNS
				opts.Namespace = &ns
			}
			if err := netlink.LinkSubscribeWithOptions(updates, done, opts); err != nil {
				i.log.Error("cannot watch the link; retrying", "err", err)
			} else {
			forward:
				for {
					select {
					case u, ok := <-updates:
						if !ok {
							break forward
						}
						select {
						case out <- u:
						case <-ctx.Done():
							break forward
						}
					case <-ctx.Done():
						break forward
					}
				}
			}
			close(done)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	return out
}

func (i *iface) run(ctx context.Context, carrierSeen chan<- struct{}) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	updates := i.subscribe(ctx)

	var (
		dhcpStop    context.CancelFunc
		dhcpDone    chan struct{}
		up          bool // we have set the link up
		haveCarrier bool // what we last acted on
		reported    bool // told Start about the first carrier
	)
	stopDHCP := func() {
		if dhcpStop == nil {
			return
		}
		dhcpStop()
		<-dhcpDone
		dhcpStop, dhcpDone = nil, nil
		i.dropLease()
	}
	// On shutdown the lease stays on the link: its lifetime is in the
	// kernel, and the box is going down or handing over.
	defer func() {
		if dhcpStop != nil {
			dhcpStop()
			<-dhcpDone
		}
	}()

	if l, err := i.n.handle.LinkByName(i.name); err == nil {
		i.linkUp(l)
		up = true
	} else {
		i.log.Warn("interface not present yet; waiting for it", "err", err)
	}

	for {
		var u netlink.LinkUpdate
		var ok bool
		select {
		case <-ctx.Done():
			return
		case u, ok = <-updates:
			if !ok {
				return
			}
		}
		if u.Link == nil || u.Attrs() == nil || u.Attrs().Name != i.name || u.Header.Type == unix.RTM_DELLINK {
			continue
		}
		if !up {
			i.linkUp(u.Link)
			up = true
		}
		carrier := u.Attrs().RawFlags&unix.IFF_LOWER_UP != 0
		i.n.mu.Lock()
		i.carrier = carrier
		i.mac = u.Attrs().HardwareAddr.String()
		i.n.mu.Unlock()
		if carrier == haveCarrier {
			continue
		}
		haveCarrier = carrier
		if !carrier {
			i.log.Warn("carrier lost")
			stopDHCP()
			i.n.notify()
			continue
		}
		i.log.Info("carrier up")
		i.applyStatic(u.Link)
		if i.cfg.DHCP {
			index := u.Attrs().Index
			dctx, cancel := context.WithCancel(ctx)
			dhcpStop, dhcpDone = cancel, make(chan struct{})
			go func(done chan struct{}) {
				defer close(done)
				err := dhcp.Run(dctx, dhcp.Config{
					Interface: i.name, NetNS: i.n.opts.NetNS, Hostname: i.n.opts.Hostname,
					Log: i.n.log, Timeout: i.n.opts.DHCPTimeout,
					Bound: func(l *dhcp.Lease) { i.applyLease(index, l) },
					Lost:  func(*dhcp.Lease) { i.dropLease() },
				})
				if err != nil && !errors.Is(err, context.Canceled) {
					i.log.Error("dhcp stopped", "err", err)
				}
			}(dhcpDone)
		}
		if !reported {
			reported = true
			carrierSeen <- struct{}{}
		}
		i.n.notify()
	}
}

// linkUp sets the link up and its IPv6 autoconfiguration policy.
func (i *iface) linkUp(l netlink.Link) {
	i.n.mu.Lock()
	i.mac = l.Attrs().HardwareAddr.String()
	i.n.mu.Unlock()
	// accept_ra before the link comes up, so the first RA is handled the
	// way the config says.
	ra := "0"
	if i.cfg.AcceptRA {
		ra = "1"
	}
	for _, key := range []string{"accept_ra", "autoconf"} {
		if err := i.n.sysctl(filepath.Join("net/ipv6/conf", i.name, key), ra); err != nil {
			i.log.Warn("ipv6 setting", "key", key, "err", err)
		}
	}
	if err := i.n.handle.LinkSetUp(l); err != nil {
		i.log.Error("bring link up", "err", err)
		return
	}
	i.log.Info("link up", "mac", l.Attrs().HardwareAddr.String(), "dhcp", i.cfg.DHCP, "accept_ra", i.cfg.AcceptRA)
}

// applyStatic installs the configured addresses and routes. Each step is
// a replace, so it is safe to repeat on every carrier return.
func (i *iface) applyStatic(l netlink.Link) {
	h := i.n.handle
	for _, a := range i.cfg.Addresses {
		addr, err := netlink.ParseAddr(a)
		if err != nil {
			continue // checked in Start
		}
		if err := h.AddrReplace(l, addr); err != nil {
			i.log.Error("add static address", "address", a, "err", err)
			continue
		}
		i.log.Info("static address", "address", a)
	}
	idx := l.Attrs().Index
	add := func(dst string, via string, family int) bool {
		gw := net.ParseIP(via)
		r := &netlink.Route{LinkIndex: idx, Gw: gw, Protocol: protoStatic, Family: family}
		if dst == "" {
			r.Priority = i.metric(idx)
		} else {
			_, r.Dst, _ = net.ParseCIDR(dst)
		}
		if err := h.RouteReplace(r); err != nil {
			i.log.Error("add static route", "to", or(dst, "default"), "via", via, "err", err)
			return false
		}
		i.log.Info("static route", "to", or(dst, "default"), "via", via)
		return true
	}
	if i.cfg.Gateway != "" && add("", i.cfg.Gateway, netlink.FAMILY_V4) {
		i.n.mu.Lock()
		i.gateway = netip.MustParseAddr(i.cfg.Gateway)
		i.n.mu.Unlock()
	}
	if i.cfg.Gateway6 != "" && add("", i.cfg.Gateway6, netlink.FAMILY_V6) {
		i.n.mu.Lock()
		i.gateway6 = netip.MustParseAddr(i.cfg.Gateway6)
		i.n.mu.Unlock()
	}
	for _, r := range i.cfg.Routes {
		fam := netlink.FAMILY_V4
		if netip.MustParsePrefix(r.To).Addr().Is6() {
			fam = netlink.FAMILY_V6
		}
		add(r.To, r.Via, fam)
	}
}

// applyLease installs a DHCP lease: the address with the lease's lifetime
// (so the kernel drops it even if we are gone) and its routes.
func (i *iface) applyLease(index int, l *dhcp.Lease) {
	h := i.n.handle
	link, err := h.LinkByIndex(index)
	if err != nil {
		i.log.Error("dhcp: link gone", "err", err)
		return
	}
	i.n.mu.Lock()
	old := i.lease
	i.n.mu.Unlock()
	if old != nil && old.Address != l.Address {
		i.removeLease(old)
	}
	secs := int(time.Until(l.ExpiresAt()).Seconds()) + 1
	addr := &netlink.Addr{IPNet: prefixToIPNet(l.Address), ValidLft: secs, PreferedLft: secs}
	if err := h.AddrReplace(link, addr); err != nil {
		i.log.Error("dhcp: add address", "address", l.Address, "err", err)
		return
	}
	for _, r := range l.Routes {
		if err := h.RouteReplace(i.leaseRoute(index, l, r)); err != nil {
			i.log.Error("dhcp: add route", "to", r.To, "via", r.Via, "err", err)
		}
	}
	// Routes that the previous lease had and this one has not must go.
	if old != nil {
		for _, r := range old.Routes {
			if !containsRoute(l.Routes, r) {
				h.RouteDel(i.leaseRoute(index, old, r))
			}
		}
	}
	i.n.mu.Lock()
	i.lease = l
	i.n.mu.Unlock()
	i.log.Info("dhcp: configured", "address", l.Address, "expires", l.ExpiresAt().Format(time.RFC3339))
	i.n.leaseChanged()
}

func (i *iface) dropLease() {
	i.n.mu.Lock()
	old := i.lease
	i.lease = nil
	i.n.mu.Unlock()
	if old == nil {
		return
	}
	i.removeLease(old)
	i.log.Warn("dhcp: address removed", "address", old.Address)
	i.n.leaseChanged()
}

func (i *iface) removeLease(l *dhcp.Lease) {
	h := i.n.handle
	link, err := h.LinkByName(i.name)
	if err != nil {
		return
	}
	for _, r := range l.Routes {
		h.RouteDel(i.leaseRoute(link.Attrs().Index, l, r)) // may be gone with the link
	}
	if err := h.AddrDel(link, &netlink.Addr{IPNet: prefixToIPNet(l.Address)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		i.log.Warn("dhcp: remove address", "address", l.Address, "err", err)
	}
}

func (i *iface) leaseRoute(index int, l *dhcp.Lease, r dhcp.Route) *netlink.Route {
	nr := &netlink.Route{LinkIndex: index, Protocol: protoDHCP, Family: netlink.FAMILY_V4,
		Src: l.Address.Addr().AsSlice()}
	if r.Default() {
		nr.Priority = i.metric(index)
	} else {
		nr.Dst = prefixToIPNet(r.To)
	}
	if r.Via.IsValid() {
		nr.Gw = r.Via.AsSlice()
		// A gateway outside our subnet is still reachable on the link.
		if !l.Address.Masked().Contains(r.Via) {
			nr.Flags |= int(netlink.FLAG_ONLINK)
		}
	} else {
		nr.Scope = netlink.SCOPE_LINK
	}
	return nr
}

func containsRoute(rs []dhcp.Route, r dhcp.Route) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// sysctl writes /proc/sys/<key> in our network namespace.
func (n *Network) sysctl(key, value string) error {
	path := filepath.Join("/proc/sys", key)
	return nsutil.Do(n.opts.NetNS, func() error {
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			if errors.Is(err, os.ErrNotExist) && strings.HasPrefix(key, "net/ipv6") {
				return fmt.Errorf("%s: IPv6 is not available in this kernel", path)
			}
			return fmt.Errorf("write %s: %w", path, err)
		}
		return nil
	})
}
