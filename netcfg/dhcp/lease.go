package dhcp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Lease is what a DHCP server granted, checked and decoded. Everything in it
// is safe to write into /etc/resolv.conf, /etc/hosts and sethostname: names
// that are not valid host or domain names are dropped, not passed on.
type Lease struct {
	Address  netip.Prefix // our address and subnet
	Server   netip.Addr   // the server that granted it (option 54)
	Routes   []Route      // option 121 when offered, else a default route via option 3
	DNS      []netip.Addr
	Domain   string
	Hostname string
	NTP      []netip.Addr

	Acquired time.Time     // when the ACK arrived (monotonic)
	Duration time.Duration // lease time
	T1, T2   time.Duration // renew and rebind times, from Acquired

	ack *dhcpv4.DHCPv4 // for renewing
}

// Route is one route a lease asks for. A zero Via means on-link.
type Route struct {
	To  netip.Prefix
	Via netip.Addr
}

// Default is whether r is a default route.
func (r Route) Default() bool { return r.To.Bits() == 0 }

// RenewAt, RebindAt and ExpiresAt are the lease's deadlines.
func (l *Lease) RenewAt() time.Time   { return l.Acquired.Add(l.T1) }
func (l *Lease) RebindAt() time.Time  { return l.Acquired.Add(l.T2) }
func (l *Lease) ExpiresAt() time.Time { return l.Acquired.Add(l.Duration) }

// Gateway is the default route's gateway, if the lease has one.
func (l *Lease) Gateway() (netip.Addr, bool) {
	for _, r := range l.Routes {
		if r.Default() && r.Via.IsValid() {
			return r.Via, true
		}
	}
	return netip.Addr{}, false
}

// Shortest lease we accept: shorter ones would make us renew in a busy
// loop. Servers in tests hand out a few seconds, which is fine.
const minLease = 2 * time.Second

// ParseACK checks an ACK and decodes the lease in it. now is when it arrived.
func ParseACK(ack *dhcpv4.DHCPv4, now time.Time) (*Lease, error) {
	if ack == nil {
		return nil, errors.New("dhcp: no ACK")
	}
	if mt := ack.MessageType(); mt != dhcpv4.MessageTypeAck {
		return nil, fmt.Errorf("dhcp: got %s, want ACK", mt)
	}
	ip, ok := addr4(ack.YourIPAddr)
	if !ok || !ip.IsGlobalUnicast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return nil, fmt.Errorf("dhcp: server offered no usable address (yiaddr %v)", ack.YourIPAddr)
	}
	mask := ack.SubnetMask()
	if mask == nil {
		mask = ack.YourIPAddr.To4().DefaultMask()
	}
	ones, bits := mask.Size()
	if bits != 32 || ones == 0 {
		return nil, fmt.Errorf("dhcp: server sent an invalid subnet mask %v", net.IP(mask))
	}
	l := &Lease{Address: netip.PrefixFrom(ip, ones), Acquired: now, ack: ack}
	if s, ok := addr4(ack.ServerIdentifier()); ok {
		l.Server = s
	}

	if crs := ack.ClasslessStaticRoute(); len(crs) > 0 {
		// RFC 3442: with option 121 present, option 3 is ignored.
		for _, r := range crs {
			if r == nil || r.Dest == nil {
				continue
			}
			dst, ok := addr4(r.Dest.IP)
			ones, bits := r.Dest.Mask.Size()
			if !ok || bits != 32 {
				continue
			}
			route := Route{To: netip.PrefixFrom(dst, ones).Masked()}
			if gw, ok := addr4(r.Router); ok && !gw.IsUnspecified() {
				route.Via = gw
			}
			l.Routes = append(l.Routes, route)
		}
	} else {
		for _, gw := range ack.Router() {
			if a, ok := addr4(gw); ok && a.IsGlobalUnicast() {
				l.Routes = append(l.Routes, Route{To: netip.PrefixFrom(netip.IPv4Unspecified(), 0), Via: a})
				break
			}
		}
	}
	l.DNS = unicast4(ack.DNS())
	l.NTP = unicast4(ack.NTPServers())
	if d := strings.TrimSuffix(ack.DomainName(), "."); ValidName(d) {
		l.Domain = d
	}
	// A server may send an FQDN; the hostname is its first label.
	if h, _, _ := strings.Cut(ack.HostName(), "."); ValidName(h) {
		l.Hostname = h
	}

	l.Duration = ack.IPAddressLeaseTime(0)
	if l.Duration < minLease {
		if l.Duration == 0 {
			return nil, errors.New("dhcp: ACK has no lease time")
		}
		l.Duration = minLease
	}
	// RFC 2131 4.4.5 defaults, also used when a server sends nonsense.
	l.T1 = ack.IPAddressRenewalTime(l.Duration / 2)
	l.T2 = ack.IPAddressRebindingTime(l.Duration * 7 / 8)
	if l.T2 <= 0 || l.T2 >= l.Duration {
		l.T2 = l.Duration * 7 / 8
	}
	if l.T1 <= 0 || l.T1 >= l.T2 {
		l.T1 = l.T2 / 2
		if d := l.Duration / 2; d < l.T2 {
			l.T1 = d
		}
	}
	return l, nil
}

// ValidName reports whether s is a usable host or domain name: letters,
// digits and hyphens in dot-separated labels of 1-63 characters, 253 in all.
// Anything else (spaces, newlines, shell or file syntax) is refused, since
// these names end up in /etc/hosts, /etc/resolv.conf and the kernel.
func ValidName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func addr4(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip.To4())
	return a, ok && a.Is4()
}

func unicast4(ips []net.IP) []netip.Addr {
	var out []netip.Addr
	for _, ip := range ips {
		if a, ok := addr4(ip); ok && a.IsGlobalUnicast() {
			out = append(out, a)
		}
	}
	return out
}
