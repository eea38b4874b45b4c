package discovery_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/eclipse-iofog/iofog-connector/netcfg/discovery"
	"github.com/eclipse-iofog/iofog-connector/netcfg/internal/nstest"
	"github.com/eclipse-iofog/iofog-connector/tunnel"
)

// lan is two namespaces on one veth LAN, each with the multicast route a
// real LAN's default route would give.
func lan(t *testing.T) (a, b netns.NsHandle) {
	a, b = nstest.New(t), nstest.New(t)
	nstest.Veth(t, a, "lan0", "10.77.0.1/24", b, "lan0", "10.77.0.2/24")
	for _, ns := range []netns.NsHandle{a, b} {
		h := nstest.Handle(t, ns)
		l, err := h.LinkByName("lan0")
		if err != nil {
			t.Fatal(err)
		}
		_, mc, _ := net.ParseCIDR("224.0.0.0/4")
		if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: mc}); err != nil {
			t.Fatalf("multicast route: %v", err)
		}
	}
	return a, b
}

// announce runs an announcement inside ns until the returned stop is called.
func announce(t *testing.T, ns netns.NsHandle, a discovery.Announcement) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- nstest.Do(ns, func() error { return discovery.Announce(ctx, a) }) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Announce: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Announce did not stop")
		}
	}
	t.Cleanup(stop)
	return stop
}

func browse(t *testing.T, ns netns.NsHandle) []discovery.Connector {
	var found []discovery.Connector
	err := nstest.Do(ns, func() error {
		var err error
		found, err = discovery.Browse(context.Background(), 2*time.Second, nil)
		return err
	})
	if err != nil {
		t.Fatalf("Browse: %v", err)
	}
	return found
}

func TestDiscoveryAcrossAVethLAN(t *testing.T) {
	a, b := lan(t)
	stop := announce(t, a, discovery.Announcement{Instance: "edge-1", Host: "edge", Port: 8080, Dev: true, Version: "1.2.3",
		IPs: []net.IP{net.ParseIP("10.77.0.1")}})

	var found []discovery.Connector
	for range 5 { // the announcer may still be joining the group
		if found = browse(t, b); len(found) > 0 {
			break
		}
	}
	if len(found) != 1 {
		t.Fatalf("found %+v, want the one Connector", found)
	}
	c := found[0]
	if c.Instance != "edge-1" || !c.Addr().Equal(net.ParseIP("10.77.0.1")) || c.Port != 8080 || !c.Dev || c.Version != "1.2.3" || c.Host != "edge.local." {
		t.Errorf("found %+v", c)
	}

	// The host answers as NAME.local: a multicast question asking for a
	// unicast answer (the QU bit), as a resolver sends it.
	err := nstest.Do(b, func() error {
		m := new(dns.Msg)
		m.SetQuestion("edge.local.", dns.TypeA)
		m.RecursionDesired = false
		m.Question[0].Qclass |= 1 << 15
		q, err := m.Pack()
		if err != nil {
			return err
		}
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("10.77.0.2")})
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.WriteTo(q, &net.UDPAddr{IP: net.ParseIP("224.0.0.251"), Port: 5353}); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1500)
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		var r dns.Msg
		if err := r.Unpack(buf[:n]); err != nil {
			return err
		}
		for _, rr := range append(r.Answer, r.Extra...) {
			if a, ok := rr.(*dns.A); ok && a.Hdr.Name == "edge.local." && a.A.Equal(net.ParseIP("10.77.0.1")) {
				return nil
			}
		}
		t.Errorf("edge.local. answered %v, want 10.77.0.1", r.Answer)
		return nil
	})
	if err != nil {
		t.Fatalf("ask for edge.local.: %v", err)
	}

	// Once it stops announcing, nothing is found.
	stop()
	if found := browse(t, b); len(found) != 0 {
		t.Errorf("found %+v after the announcement stopped", found)
	}
}

// An agent-side tunnel configured with "host":"auto" takes the address of
// the Connector announced in its mode.
func TestTunnelFindsTheConnectorOnTheLAN(t *testing.T) {
	a, b := lan(t)
	announce(t, a, discovery.Announcement{Instance: "tls-one", Host: "edge", Port: 443, Dev: false, Version: "1",
		IPs: []net.IP{net.ParseIP("10.77.0.1")}})
	cfg := tunnel.Config{Mode: "private", Host: tunnel.AutoHost, Port: 6000, Passcode: "0123456789abcdef0123456789abcdef0123", DevMode: true}
	var got tunnel.Config
	var err error
	nstest.Do(b, func() error {
		for range 3 {
			if got, err = tunnel.ResolveAuto(context.Background(), cfg); err == nil {
				break
			}
		}
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "no Connector in dev mode") {
		t.Fatalf("dev tunnel with only a TLS Connector on the LAN: host %q, %v", got.Host, err)
	}
	announce(t, a, discovery.Announcement{Instance: "dev-one", Host: "edge", Port: 8080, Dev: true, Version: "1",
		IPs: []net.IP{net.ParseIP("10.77.0.1")}})
	nstest.Do(b, func() error {
		for range 5 {
			if got, err = tunnel.ResolveAuto(context.Background(), cfg); err == nil {
				break
			}
		}
		return nil
	})
	if err != nil || got.Host != "10.77.0.1" {
		t.Fatalf("host auto: %q, %v; want 10.77.0.1", got.Host, err)
	}
}
