// Package dhcptest is a small DHCPv4 server for tests, built on
// insomniacslk/dhcp's server4. It hands one fixed address to whoever asks,
// on an interface inside a test's network namespace, and can be told to go
// silent (to let leases run out) or to refuse (NAK) renewals.
package dhcptest

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/vishvananda/netns"

	"github.com/eclipse-iofog/iofog-connector/netcfg/internal/nsutil"
)

// Config is what the server offers.
type Config struct {
	ServerIP netip.Addr   // our address on the interface (server identifier)
	Address  netip.Prefix // the address handed out, with its subnet
	Router   netip.Addr
	Routes   []*dhcpv4.Route // option 121
	DNS      []netip.Addr
	Domain   string
	Hostname string
	NTP      []netip.Addr
	Lease    time.Duration
	T1, T2   time.Duration // 0: let the client derive them
}

// Server is a running test DHCP server.
type Server struct {
	cfg Config
	srv *server4.Server

	mu        sync.Mutex
	silent    bool
	nak       bool
	discovers int
	requests  int // REQUESTs with ciaddr set: renewals and rebinds
}

// Start serves on iface inside ns until the test ends.
func Start(t testing.TB, ns netns.NsHandle, iface string, cfg Config) *Server {
	t.Helper()
	s := &Server{cfg: cfg}
	err := nsutil.Do(ns, func() (err error) {
		s.srv, err = server4.NewServer(iface, &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ServerPort}, s.handle)
		return err
	})
	if err != nil {
		t.Fatalf("start DHCP server on %s: %v", iface, err)
	}
	go s.srv.Serve()
	t.Cleanup(func() { s.srv.Close() })
	return s
}

// SetSilent makes the server ignore (true) or answer (false) every message.
func (s *Server) SetSilent(v bool) { s.mu.Lock(); s.silent = v; s.mu.Unlock() }

// SetNAK makes the server refuse (true) every REQUEST.
func (s *Server) SetNAK(v bool) { s.mu.Lock(); s.nak = v; s.mu.Unlock() }

// Counts returns how many DISCOVERs and renewing/rebinding REQUESTs arrived.
func (s *Server) Counts() (discovers, renewals int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.discovers, s.requests
}

func (s *Server) handle(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
	s.mu.Lock()
	silent, nak := s.silent, s.nak
	switch m.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		s.discovers++
	case dhcpv4.MessageTypeRequest:
		if !m.ClientIPAddr.IsUnspecified() {
			s.requests++
		}
	}
	s.mu.Unlock()
	if silent {
		return
	}
	var reply dhcpv4.MessageType
	switch m.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		reply = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		reply = dhcpv4.MessageTypeAck
		if nak {
			reply = dhcpv4.MessageTypeNak
		}
	default:
		return
	}
	c := s.cfg
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(reply),
		dhcpv4.WithServerIP(c.ServerIP.AsSlice()),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(c.ServerIP.AsSlice())),
	}
	if reply != dhcpv4.MessageTypeNak {
		mods = append(mods,
			dhcpv4.WithYourIP(c.Address.Addr().AsSlice()),
			dhcpv4.WithNetmask(net.CIDRMask(c.Address.Bits(), 32)),
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(c.Lease)),
		)
		if c.T1 > 0 {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(c.T1)))
		}
		if c.T2 > 0 {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(c.T2)))
		}
		if c.Router.IsValid() {
			mods = append(mods, dhcpv4.WithRouter(c.Router.AsSlice()))
		}
		if len(c.Routes) > 0 {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(c.Routes...)))
		}
		if len(c.DNS) > 0 {
			mods = append(mods, dhcpv4.WithDNS(ips(c.DNS)...))
		}
		if len(c.NTP) > 0 {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptNTPServers(ips(c.NTP)...)))
		}
		if c.Domain != "" {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainName(c.Domain)))
		}
		if c.Hostname != "" {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(c.Hostname)))
		}
	}
	resp, err := dhcpv4.NewReplyFromRequest(m, mods...)
	if err != nil {
		return
	}
	// The client listens on a raw socket for anything to port 68, so a
	// broadcast reaches it whether or not it has its address yet.
	conn.WriteTo(resp.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort})
}

func ips(as []netip.Addr) []net.IP {
	out := make([]net.IP, len(as))
	for i, a := range as {
		out[i] = a.AsSlice()
	}
	return out
}
