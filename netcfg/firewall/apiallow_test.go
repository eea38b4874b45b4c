package firewall_test

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/eclipse-iofog/iofog-connector/netcfg/firewall"
	"github.com/eclipse-iofog/iofog-connector/netcfg/internal/nstest"
)

// On the appliance, api.allow is enforced in the kernel: other sources
// never reach the API port, while mapping ports stay open to everyone.
func TestAPIAllowOnlyListedSourcesReachTheAPI(t *testing.T) {
	p := newPair(t)
	listen(t, p.server, 8080, 6000)
	r := dropRules()
	r.APIAllow = []string{"10.77.0.2", "fd00:77::/64"}
	fw, err := apply(t, r, firewall.Options{NetNS: p.server})
	if err != nil {
		t.Fatal(err)
	}
	if err := fw.OpenPorts(6000); err != nil {
		t.Fatal(err)
	}
	if err := dial(p, "10.77.0.2", 8080, connectGuard); err != nil {
		t.Errorf("listed source to the API port: %v", err)
	}
	dropped := counter(t, fw, firewall.CounterDropped)
	err = dial(p, "10.77.0.3", 8080, dropWait)
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("unlisted source to the API port: %v, want its SYN dropped", err)
	} else if n := counter(t, fw, firewall.CounterDropped); n <= dropped {
		t.Errorf("unlisted source timed out but the firewall dropped nothing (%d -> %d)", dropped, n)
	}
	if err := dial(p, "10.77.0.3", 6000, connectGuard); err != nil {
		t.Errorf("unlisted source to a mapping port: %v, want it open to everyone", err)
	}

	// A network lets in every address in it.
	r.APIAllow = []string{"10.77.0.0/24"}
	if _, err := apply(t, r, firewall.Options{NetNS: p.server}); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{"10.77.0.2", "10.77.0.3"} {
		if err := dial(p, src, 8080, connectGuard); err != nil {
			t.Errorf("%s in 10.77.0.0/24 to the API port: %v", src, err)
		}
	}
}

// The same over IPv6: the source is compared at the IPv6 header's offset.
func TestAPIAllowIPv6(t *testing.T) {
	p := newPair(t)
	for _, a := range []struct {
		ns    netns.NsHandle
		link  string
		addrs []string
	}{
		{p.server, "srv0", []string{"fd00:77::1/64"}},
		{p.client, "cli0", []string{"fd00:77::2/64", "fd00:77::3/64"}},
	} {
		h := nstest.Handle(t, a.ns)
		l, err := h.LinkByName(a.link)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range a.addrs {
			addr, _ := netlink.ParseAddr(s)
			addr.Flags = unix.IFA_F_NODAD // usable at once
			if err := h.AddrAdd(l, addr); err != nil {
				t.Fatalf("add %s: %v", s, err)
			}
		}
	}
	listen(t, p.server, 8080)
	r := dropRules()
	r.APIAllow = []string{"10.77.0.0/24", "fd00:77::2"}
	fw, err := apply(t, r, firewall.Options{NetNS: p.server})
	if err != nil {
		t.Fatal(err)
	}
	dial6 := func(src string, timeout time.Duration) error {
		return nstest.Do(p.client, func() error {
			d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			c, err := d.Dial("tcp", "[fd00:77::1]:8080")
			if err != nil {
				return err
			}
			return c.Close()
		})
	}
	if err := dial6("fd00:77::2", connectGuard); err != nil {
		t.Errorf("listed IPv6 source to the API port: %v", err)
	}
	dropped := counter(t, fw, firewall.CounterDropped)
	err = dial6("fd00:77::3", dropWait)
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("unlisted IPv6 source to the API port: %v, want its SYN dropped", err)
	} else if n := counter(t, fw, firewall.CounterDropped); n <= dropped {
		t.Errorf("unlisted IPv6 source timed out but the firewall dropped nothing (%d -> %d)", dropped, n)
	}
}

func TestAPIAllowBadEntryIsRefused(t *testing.T) {
	r := dropRules()
	r.APIAllow = []string{"10.0.0.0/8", "controller.example"}
	if err := r.Validate(); err == nil || !strings.Contains(err.Error(), "allow[1]") {
		t.Errorf("Validate = %v, want an error naming allow[1]", err)
	}
}
