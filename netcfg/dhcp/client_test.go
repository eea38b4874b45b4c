package dhcp_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/eclipse-iofog/iofog-connector/netcfg/dhcp"
	"github.com/eclipse-iofog/iofog-connector/netcfg/internal/dhcptest"
	"github.com/eclipse-iofog/iofog-connector/netcfg/internal/nstest"
)

// guard is an "it hangs" limit, far above any expected wait.
const guard = 30 * time.Second

type event struct {
	bound bool
	lease *dhcp.Lease
}

func setup(t *testing.T, lease, t1, t2 time.Duration) (*dhcptest.Server, <-chan event) {
	srvNS, cliNS := nstest.New(t), nstest.New(t)
	nstest.Veth(t, srvNS, "dsrv", "10.90.0.1/24", cliNS, "dcli", "")
	srv := dhcptest.Start(t, srvNS, "dsrv", dhcptest.Config{
		ServerIP: netip.MustParseAddr("10.90.0.1"),
		Address:  netip.MustParsePrefix("10.90.0.50/24"),
		Router:   netip.MustParseAddr("10.90.0.1"),
		DNS:      []netip.Addr{netip.MustParseAddr("10.90.0.53")},
		NTP:      []netip.Addr{netip.MustParseAddr("10.90.0.123")},
		Domain:   "site.example",
		Hostname: "edge7",
		Lease:    lease,
		T1:       t1,
		T2:       t2,
	})
	events := make(chan event, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- dhcp.Run(ctx, dhcp.Config{
			Interface: "dcli", NetNS: cliNS, Timeout: 500 * time.Millisecond, MaxBackoff: time.Second,
			Bound: func(l *dhcp.Lease) { events <- event{true, l} },
			Lost:  func(l *dhcp.Lease) { events <- event{false, l} },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
	return srv, events
}

func next(t *testing.T, events <-chan event, bound bool) *dhcp.Lease {
	t.Helper()
	select {
	case e := <-events:
		if e.bound != bound {
			t.Fatalf("got bound=%v, want bound=%v (lease %+v)", e.bound, bound, e.lease)
		}
		return e.lease
	case <-time.After(guard):
		t.Fatalf("no DHCP event (want bound=%v) within %v", bound, guard)
	}
	return nil
}

func TestLeaseRenewExpire(t *testing.T) {
	srv, events := setup(t, 4*time.Second, 0, 0)
	l := next(t, events, true)
	if l.Address != netip.MustParsePrefix("10.90.0.50/24") {
		t.Errorf("address = %v", l.Address)
	}
	if gw, ok := l.Gateway(); !ok || gw != netip.MustParseAddr("10.90.0.1") {
		t.Errorf("gateway = %v %v", gw, ok)
	}
	if len(l.DNS) != 1 || l.DNS[0] != netip.MustParseAddr("10.90.0.53") || l.Domain != "site.example" ||
		l.Hostname != "edge7" || len(l.NTP) != 1 || l.Server != netip.MustParseAddr("10.90.0.1") {
		t.Errorf("lease options = %+v", l)
	}
	if l.T1 != 2*time.Second || l.T2 != 3500*time.Millisecond {
		t.Errorf("T1, T2 = %v, %v; want the RFC 2131 defaults 2s, 3.5s", l.T1, l.T2)
	}

	// Renewed at T1 by the same server.
	r := next(t, events, true)
	if r.Address != l.Address || !r.Acquired.After(l.Acquired) {
		t.Errorf("renewal = %+v after %+v", r, l)
	}
	if _, renewals := srv.Counts(); renewals == 0 {
		t.Errorf("server saw no renewing REQUEST")
	}

	// The server goes away: renew, rebind, then the lease expires.
	srv.SetSilent(true)
	lost := next(t, events, false)
	if lost.Address != l.Address {
		t.Errorf("lost lease %v, want %v", lost.Address, l.Address)
	}
	if time.Now().Before(lost.ExpiresAt()) {
		t.Errorf("lease dropped at %v, before it expired at %v", time.Now(), lost.ExpiresAt())
	}
	discoversBefore, _ := srv.Counts()

	// It comes back: the client starts over with DISCOVER.
	srv.SetSilent(false)
	again := next(t, events, true)
	if again.Address != l.Address {
		t.Errorf("new lease %v", again.Address)
	}
	if d, _ := srv.Counts(); d <= discoversBefore {
		t.Errorf("no new DISCOVER after expiry (%d then %d)", discoversBefore, d)
	}
}

func TestRefusedRenewalStartsOver(t *testing.T) {
	// Renew after 1 s, expire after a minute: a loss before then is the NAK.
	srv, events := setup(t, time.Minute, time.Second, 50*time.Second)
	next(t, events, true)
	srv.SetNAK(true)
	lost := next(t, events, false)
	if time.Now().After(lost.ExpiresAt()) {
		t.Errorf("NAK should end the lease at once, not at expiry")
	}
	srv.SetNAK(false)
	next(t, events, true)
}

func ack(mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	base := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithYourIP(net.IPv4(192, 168, 7, 20)),
		dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
		dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(time.Hour)),
	}
	p, err := dhcpv4.New(append(base, mods...)...)
	if err != nil {
		panic(err)
	}
	return p
}

func TestClasslessRoutesReplaceRouterOption(t *testing.T) {
	_, lan, _ := net.ParseCIDR("10.20.0.0/16")
	_, def, _ := net.ParseCIDR("0.0.0.0/0")
	l, err := dhcp.ParseACK(ack(
		dhcpv4.WithRouter(net.IPv4(192, 168, 7, 1)),
		dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(
			&dhcpv4.Route{Dest: lan, Router: net.IPv4(192, 168, 7, 254)},
			&dhcpv4.Route{Dest: def, Router: net.IPv4(192, 168, 7, 2)},
		)),
	), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := []dhcp.Route{
		{To: netip.MustParsePrefix("10.20.0.0/16"), Via: netip.MustParseAddr("192.168.7.254")},
		{To: netip.MustParsePrefix("0.0.0.0/0"), Via: netip.MustParseAddr("192.168.7.2")},
	}
	if len(l.Routes) != 2 || l.Routes[0] != want[0] || l.Routes[1] != want[1] {
		t.Errorf("routes = %v, want %v (option 3 ignored when option 121 is present)", l.Routes, want)
	}

	l, err = dhcp.ParseACK(ack(dhcpv4.WithRouter(net.IPv4(192, 168, 7, 1))), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if gw, ok := l.Gateway(); !ok || gw != netip.MustParseAddr("192.168.7.1") {
		t.Errorf("default gateway from option 3 = %v %v", gw, ok)
	}
}

func TestUnsafeNamesAreDropped(t *testing.T) {
	l, err := dhcp.ParseACK(ack(
		dhcpv4.WithOption(dhcpv4.OptHostName("evil\nnameserver 6.6.6.6")),
		dhcpv4.WithOption(dhcpv4.OptDomainName("a b")),
	), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if l.Hostname != "" || l.Domain != "" {
		t.Errorf("unsafe names passed through: hostname %q, domain %q", l.Hostname, l.Domain)
	}
	l, err = dhcp.ParseACK(ack(dhcpv4.WithOption(dhcpv4.OptHostName("box-3.lan.example"))), time.Now())
	if err != nil || l.Hostname != "box-3" {
		t.Errorf("FQDN hostname: got %q, %v; want box-3", l.Hostname, err)
	}
}

func TestRejectsUnusableACK(t *testing.T) {
	for name, p := range map[string]*dhcpv4.DHCPv4{
		"no address":    ack(dhcpv4.WithYourIP(net.IPv4zero)),
		"broadcast":     ack(dhcpv4.WithYourIP(net.IPv4bcast)),
		"no lease time": ack(dhcpv4.WithoutOption(dhcpv4.OptionIPAddressLeaseTime)),
		"offer":         ack(dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer)),
	} {
		if _, err := dhcp.ParseACK(p, time.Now()); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParseACK(f *testing.F) {
	_, lan, _ := net.ParseCIDR("10.20.0.0/16")
	f.Add(ack(dhcpv4.WithRouter(net.IPv4(192, 168, 7, 1)), dhcpv4.WithDNS(net.IPv4(1, 1, 1, 1))).ToBytes())
	f.Add(ack(dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(&dhcpv4.Route{Dest: lan, Router: net.IPv4(192, 168, 7, 254)})),
		dhcpv4.WithOption(dhcpv4.OptHostName("h")), dhcpv4.WithOption(dhcpv4.OptDomainName("d.example"))).ToBytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		l, err := dhcp.ParseACK(p, time.Now())
		if err != nil {
			return
		}
		if !l.Address.IsValid() || !l.Address.Addr().Is4() || l.Address.Bits() == 0 {
			t.Fatalf("bad address %v", l.Address)
		}
		if !(0 < l.T1 && l.T1 < l.T2 && l.T2 < l.Duration) {
			t.Fatalf("times out of order: T1 %v T2 %v lease %v", l.T1, l.T2, l.Duration)
		}
		for _, s := range []string{l.Hostname, l.Domain} {
			if s != "" && (!dhcp.ValidName(s) || strings.ContainsAny(s, " \n\t#;")) {
				t.Fatalf("unsafe name %q", s)
			}
		}
		for _, r := range l.Routes {
			if !r.To.IsValid() || r.To != r.To.Masked() {
				t.Fatalf("bad route %v", r)
			}
		}
	})
}
