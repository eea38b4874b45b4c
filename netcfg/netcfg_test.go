package netcfg_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/sys/unix"

	"github.com/eclipse-iofog/iofog-connector/netcfg"
	"github.com/eclipse-iofog/iofog-connector/netcfg/internal/dhcptest"
	"github.com/eclipse-iofog/iofog-connector/netcfg/internal/nstest"
	"github.com/eclipse-iofog/iofog-connector/netcfg/sntp"
	"github.com/eclipse-iofog/iofog-connector/schema"
)

// guard is an "it hangs" limit, far above any expected wait.
const guard = 30 * time.Second

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// recorder stands in for sethostname and settimeofday, so tests never
// change the host.
type recorder[T any] struct {
	mu   sync.Mutex
	vals []T
}

func (r *recorder[T]) set(v T) error {
	r.mu.Lock()
	r.vals = append(r.vals, v)
	r.mu.Unlock()
	return nil
}
func (r *recorder[T]) all() []T { r.mu.Lock(); defer r.mu.Unlock(); return slices.Clone(r.vals) }

// waitFor polls cond until true or the guard runs out.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func start(t *testing.T, o netcfg.Options) *netcfg.Network {
	t.Helper()
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	n, err := netcfg.Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func iface(s netcfg.State, name string) netcfg.InterfaceState {
	for _, i := range s.Interfaces {
		if i.Name == name {
			return i
		}
	}
	return netcfg.InterfaceState{}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestStaticAddressesRoutesDNSAndHostname(t *testing.T) {
	box, peer := nstest.New(t), nstest.New(t)
	// Start must bring lo up itself.
	h := nstest.Handle(t, box)
	lo, _ := h.LinkByName("lo")
	h.LinkSetDown(lo)
	nstest.Veth(t, box, "eth0", "", peer, "peer0", "10.60.0.1/24")
	root := t.TempDir()
	var hostnames recorder[string]
	n := start(t, netcfg.Options{
		NetNS: box, RootDir: root, Hostname: "box1", SetHostname: hostnames.set,
		Interfaces: []schema.Interface{{
			Name:      "eth0",
			Addresses: []string{"10.60.0.2/24", "fd00:60::2/64"},
			Gateway:   "10.60.0.1",
			Gateway6:  "fd00:60::1",
			DNS:       []string{"10.60.0.53", "fd00:60::53"},
			Routes:    []schema.Route{{To: "10.99.0.0/16", Via: "10.60.0.254"}},
		}},
	})

	s := n.State()
	e := iface(s, "eth0")
	for _, want := range []string{"10.60.0.2/24", "fd00:60::2/64"} {
		if !slices.Contains(e.Addresses, netip.MustParsePrefix(want)) {
			t.Errorf("addresses %v lack %s", e.Addresses, want)
		}
	}
	if !e.Carrier || e.Gateway != netip.MustParseAddr("10.60.0.1") || e.Gateway6 != netip.MustParseAddr("fd00:60::1") {
		t.Errorf("eth0 state = %+v", e)
	}
	if lo, _ := h.LinkByName("lo"); lo.Attrs().Flags&net.FlagUp == 0 {
		t.Error("lo is down")
	}

	// The kernel has the routes.
	routes, err := h.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range routes {
		if r.Gw != nil {
			dst := "default"
			if r.Dst != nil && r.Dst.IP != nil && !r.Dst.IP.IsUnspecified() {
				dst = r.Dst.String()
			}
			got = append(got, dst+" via "+r.Gw.String())
		}
	}
	for _, want := range []string{"default via 10.60.0.1", "default via fd00:60::1", "10.99.0.0/16 via 10.60.0.254"} {
		if !slices.Contains(got, want) {
			t.Errorf("routes %v lack %q", got, want)
		}
	}

	// Real packets: the peer reaches us on the static address.
	ln := nstest.Listen(t, box, "10.60.0.2:0")
	if err := nstest.Do(peer, func() error {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), guard)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		t.Errorf("connect to the static address: %v", err)
	}

	resolv := read(t, filepath.Join(root, "etc/resolv.conf"))
	if !strings.Contains(resolv, "nameserver 10.60.0.53\nnameserver fd00:60::53\n") {
		t.Errorf("resolv.conf:\n%s", resolv)
	}
	if hosts := read(t, filepath.Join(root, "etc/hosts")); !strings.Contains(hosts, "127.0.1.1\tbox1\n") || !strings.Contains(hosts, "127.0.0.1\tlocalhost\n") {
		t.Errorf("hosts:\n%s", hosts)
	}
	if got := hostnames.all(); !slices.Equal(got, []string{"box1"}) || s.Hostname != "box1" {
		t.Errorf("hostname set to %v, state %q; want box1 once", got, s.Hostname)
	}
	// accept_ra: false (the zero value here) turns router advertisements off.
	var ra string
	nstest.Do(box, func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv6/conf/eth0/accept_ra")
		ra = strings.TrimSpace(string(b))
		return err
	})
	if ra != "0" {
		t.Errorf("accept_ra = %q, want 0", ra)
	}
}

func TestHostnameFromMAC(t *testing.T) {
	box, peer := nstest.New(t), nstest.New(t)
	nstest.Veth(t, box, "eth0", "", peer, "peer0", "")
	h := nstest.Handle(t, box)
	l, _ := h.LinkByName("eth0")
	if err := h.LinkSetHardwareAddr(l, net.HardwareAddr{0x02, 0, 0, 0xa1, 0xb2, 0xc3}); err != nil {
		t.Fatal(err)
	}
	var hostnames recorder[string]
	n := start(t, netcfg.Options{NetNS: box, RootDir: t.TempDir(), SetHostname: hostnames.set,
		Interfaces: []schema.Interface{{Name: "eth0", Addresses: []string{"10.61.0.2/24"}}}})
	if got := hostnames.all(); !slices.Equal(got, []string{"iofog-a1b2c3"}) || n.State().Hostname != "iofog-a1b2c3" {
		t.Errorf("hostname set to %v; want [iofog-a1b2c3]", got)
	}
}

func TestSetSystemHostnameInOwnUTSNamespace(t *testing.T) {
	nstest.Require(t)
	before, _ := os.Hostname()
	errc := make(chan error, 1)
	go func() {
		// This thread moves to a new UTS namespace and is never unlocked,
		// so it exits with the goroutine: the host's hostname is untouched.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWUTS); err != nil {
			errc <- err
			return
		}
		if err := netcfg.SetSystemHostname("iofog-uts-test"); err != nil {
			errc <- err
			return
		}
		var u unix.Utsname
		if err := unix.Uname(&u); err != nil {
			errc <- err
			return
		}
		if got := unix.ByteSliceToString(u.Nodename[:]); got != "iofog-uts-test" {
			errc <- fmt.Errorf("uname says %q", got)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Hostname(); after != before {
		t.Fatalf("host hostname changed from %q to %q", before, after)
	}
}

// sntpServer answers SNTP on addr inside ns with a clock skew ahead.
func sntpServer(t *testing.T, ns netns.NsHandle, addr string, skew time.Duration) string {
	t.Helper()
	var pc net.PacketConn
	if err := nstest.Do(ns, func() (err error) { pc, err = net.ListenPacket("udp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, peer, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < 48 {
				continue
			}
			r := make([]byte, 48)
			r[0], r[1] = 4<<3|4, 2
			copy(r[24:32], buf[40:48])
			binary.BigEndian.PutUint64(r[32:40], sntp.NTPTime(time.Now().Add(skew)))
			binary.BigEndian.PutUint64(r[40:48], sntp.NTPTime(time.Now().Add(skew)))
			pc.WriteTo(r, peer)
		}
	}()
	return pc.LocalAddr().String()
}

func TestDHCPOnFirstEthernetWithCarrierLoss(t *testing.T) {
	box, srvNS := nstest.New(t), nstest.New(t)
	nstest.Veth(t, box, "en0", "", srvNS, "dsrv", "10.91.0.1/24")
	srv := dhcptest.Start(t, srvNS, "dsrv", dhcptest.Config{
		ServerIP: netip.MustParseAddr("10.91.0.1"),
		Address:  netip.MustParsePrefix("10.91.0.50/24"),
		Router:   netip.MustParseAddr("10.91.0.1"),
		DNS:      []netip.Addr{netip.MustParseAddr("10.91.0.53")},
		NTP:      []netip.Addr{netip.MustParseAddr("10.91.0.1")},
		Domain:   "site.example",
		Hostname: "edge7",
		Lease:    4 * time.Second,
	})
	skew := 3 * time.Hour
	sntpServer(t, srvNS, "10.91.0.1:123", skew)
	root := t.TempDir()
	var hostnames recorder[string]
	var clock recorder[time.Time]
	n := start(t, netcfg.Options{
		NetNS: box, RootDir: root, SetHostname: hostnames.set, SetClock: clock.set,
		Interfaces:  []schema.Interface{{DHCP: true}}, // no name: first Ethernet
		DHCPTimeout: 500 * time.Millisecond,
	})
	want := netip.MustParsePrefix("10.91.0.50/24")
	has := func() bool { return slices.Contains(iface(n.State(), "en0").Addresses, want) }
	if err := waitAddress(n); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the lease in the state", func() bool { return iface(n.State(), "en0").Lease != nil })
	s := n.State()
	e := iface(s, "en0")
	if e.Lease == nil || e.Lease.Server != netip.MustParseAddr("10.91.0.1") || e.Gateway != netip.MustParseAddr("10.91.0.1") {
		t.Errorf("en0 = %+v", e)
	}
	// The files follow the lease a moment after the address does.
	waitFor(t, "hostname from DHCP", func() bool { return slices.Contains(hostnames.all(), "edge7") })
	waitFor(t, "resolv.conf from DHCP", func() bool {
		return strings.Contains(read(t, filepath.Join(root, "etc/resolv.conf")), "search site.example\nnameserver 10.91.0.53\n")
	})
	waitFor(t, "hosts with the DHCP name and domain", func() bool {
		return strings.Contains(read(t, filepath.Join(root, "etc/hosts")), "127.0.1.1\tedge7.site.example edge7\n")
	})
	// The default route is in the kernel.
	h := nstest.Handle(t, box)
	routes, _ := h.RouteList(nil, netlink.FAMILY_V4)
	if !slices.ContainsFunc(routes, func(r netlink.Route) bool {
		return r.Gw.Equal(net.ParseIP("10.91.0.1")) && (r.Dst == nil || r.Dst.IP.IsUnspecified())
	}) {
		t.Errorf("no default route via 10.91.0.1 in %v", routes)
	}

	// The clock was measured against the NTP server DHCP named.
	waitFor(t, "clock set from DHCP's NTP server", func() bool { return len(clock.all()) > 0 })
	if d := clock.all()[0].Sub(time.Now().Add(skew)).Abs(); d > time.Minute {
		t.Errorf("clock set %v away from the server's time", d)
	}
	if c := n.State().Clock; c.Server != "10.91.0.1" || c.Offset < skew-time.Minute {
		t.Errorf("clock state = %+v", c)
	}

	// Survives renewals (the lease is 4 s).
	waitFor(t, "a renewal", func() bool { _, r := srv.Counts(); return r > 0 })
	if !has() {
		t.Error("address gone after renewal")
	}

	// Carrier loss drops the lease; carrier return gets a new one.
	sh := nstest.Handle(t, srvNS)
	peer, _ := sh.LinkByName("dsrv")
	discovers, _ := srv.Counts()
	if err := sh.LinkSetDown(peer); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "address removed on carrier loss", func() bool { return !has() && iface(n.State(), "en0").Lease == nil })
	if s := n.State(); iface(s, "en0").Carrier || s.Hostname != "edge7" || len(s.DNS) != 0 {
		t.Errorf("after carrier loss: %+v; want no carrier, no DHCP DNS, hostname kept", s)
	}
	if err := sh.LinkSetUp(peer); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "address back after carrier return", has)
	if d, _ := srv.Counts(); d <= discovers {
		t.Errorf("no new DISCOVER after carrier return")
	}

	// The server goes silent: the address goes when the lease expires.
	srv.SetSilent(true)
	waitFor(t, "address removed at lease expiry", func() bool { return !has() })
}

func waitAddress(n *netcfg.Network) error {
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	return n.WaitAddress(ctx)
}

func TestClockRestoredFromTimeFile(t *testing.T) {
	box, peer := nstest.New(t), nstest.New(t)
	nstest.Veth(t, box, "eth0", "", peer, "peer0", "")
	dir := t.TempDir()
	file := filepath.Join(dir, "last-time")
	future := time.Now().Add(1000 * time.Hour).UTC().Truncate(time.Second)
	if err := os.WriteFile(file, []byte(future.Format(time.RFC3339Nano)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var clock recorder[time.Time]
	n := start(t, netcfg.Options{NetNS: box, RootDir: dir, TimeFile: file, SetClock: clock.set,
		Interfaces: []schema.Interface{{Name: "eth0"}}})
	if got := clock.all(); len(got) != 1 || !got[0].Equal(future) {
		t.Errorf("clock set to %v, want [%v]", got, future)
	}
	if !n.State().Clock.Restored.Equal(future) {
		t.Errorf("state = %+v", n.State().Clock)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	// Close saved the current time (the test's clock did not move).
	saved, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(read(t, file)))
	if err != nil || saved.After(time.Now()) || saved.Before(time.Now().Add(-guard)) {
		t.Errorf("saved time %v, %v", saved, err)
	}

	// A clock already past the saved time is left alone.
	var clock2 recorder[time.Time]
	n2 := start(t, netcfg.Options{NetNS: box, RootDir: dir, TimeFile: file, SetClock: clock2.set,
		Interfaces: []schema.Interface{{Name: "eth0"}}})
	n2.Close()
	if got := clock2.all(); len(got) != 0 {
		t.Errorf("clock set to %v though it was ahead of the saved time", got)
	}
}

func TestSNTPFromConfigSetsClockAndSavesTime(t *testing.T) {
	box, peer := nstest.New(t), nstest.New(t)
	nstest.Veth(t, box, "eth0", "", peer, "peer0", "")
	skew := -90 * time.Minute
	addr := sntpServer(t, box, "127.0.0.1:0", skew)
	file := filepath.Join(t.TempDir(), "last-time")
	var clock recorder[time.Time]
	n := start(t, netcfg.Options{NetNS: box, RootDir: t.TempDir(), TimeFile: file, SetClock: clock.set,
		NTP: schema.NTP{Servers: []string{addr}}, Interfaces: []schema.Interface{{Name: "eth0"}}})
	waitFor(t, "clock set by SNTP", func() bool { return len(clock.all()) > 0 })
	if d := clock.all()[0].Sub(time.Now().Add(skew)).Abs(); d > time.Minute {
		t.Errorf("clock set %v away from the server's time", d)
	}
	waitFor(t, "time file written after sync", func() bool { _, err := os.Stat(file); return err == nil })
	_ = n
}

func TestRejectsBadConfig(t *testing.T) {
	for _, ic := range []schema.Interface{
		{Name: "eth0", Addresses: []string{"10.0.0.1"}},
		{Name: "eth0", Gateway: "fd00::1"},
		{Name: "eth0", Routes: []schema.Route{{To: "10.0.0.0/8", Via: "fd00::1"}}},
		{Name: "an-interface-name-too-long"},
	} {
		if _, err := netcfg.Start(context.Background(), netcfg.Options{Interfaces: []schema.Interface{ic}, RootDir: t.TempDir()}); err == nil {
			t.Errorf("%+v accepted", ic)
		}
	}
	if _, err := netcfg.Start(context.Background(), netcfg.Options{Hostname: "bad name"}); err == nil {
		t.Error("bad hostname accepted")
	}
}

func TestNoCarrierAtBootThenCable(t *testing.T) {
	box, peer := nstest.New(t), nstest.New(t)
	nstest.Veth(t, box, "eth0", "", peer, "peer0", "10.62.0.1/24")
	ph := nstest.Handle(t, peer)
	pl, _ := ph.LinkByName("peer0")
	if err := ph.LinkSetDown(pl); err != nil { // the cable is out
		t.Fatal(err)
	}
	n := start(t, netcfg.Options{NetNS: box, RootDir: t.TempDir(), CarrierTimeout: 300 * time.Millisecond,
		Interfaces: []schema.Interface{{Name: "eth0", Addresses: []string{"10.62.0.2/24"}, Gateway: "10.62.0.1", AcceptRA: true}}})
	// Start gave up waiting and said so in the state.
	if e := iface(n.State(), "eth0"); e.Carrier {
		t.Errorf("state says carrier with the peer down: %+v", e)
	}
	if err := ph.LinkSetUp(pl); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "static config once the cable is in", func() bool {
		e := iface(n.State(), "eth0")
		return e.Carrier && e.Gateway.IsValid() && slices.Contains(e.Addresses, netip.MustParsePrefix("10.62.0.2/24"))
	})
	// accept_ra was set in the box's namespace, not the host's.
	var ra string
	nstest.Do(box, func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv6/conf/eth0/accept_ra")
		ra = strings.TrimSpace(string(b))
		return err
	})
	if ra != "1" {
		t.Errorf("accept_ra = %q, want 1", ra)
	}
}

func TestInterfaceThatAppearsLater(t *testing.T) {
	box, peer := nstest.New(t), nstest.New(t)
	n := start(t, netcfg.Options{NetNS: box, RootDir: t.TempDir(), CarrierTimeout: 300 * time.Millisecond,
		Interfaces: []schema.Interface{{Name: "usb0", Addresses: []string{"10.63.0.2/24"}}}})
	// A USB adapter whose driver registers it after boot.
	nstest.Veth(t, box, "usb0", "", peer, "peer0", "10.63.0.1/24")
	waitFor(t, "the late interface configured", func() bool {
		return slices.Contains(iface(n.State(), "usb0").Addresses, netip.MustParsePrefix("10.63.0.2/24"))
	})
}

// TestSLAACFromRouterAdvertisement sends a real router advertisement from
// the peer and checks that the kernel's SLAAC address shows in the state.
func TestSLAACFromRouterAdvertisement(t *testing.T) {
	box, peer := nstest.New(t), nstest.New(t)
	// The RA must come from the peer's link-local address, so skip its
	// duplicate address detection.
	if err := nstest.Do(peer, func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/default/accept_dad", []byte("0"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	nstest.Veth(t, box, "eth0", "", peer, "peer0", "")
	n := start(t, netcfg.Options{NetNS: box, RootDir: t.TempDir(),
		Interfaces: []schema.Interface{{Name: "eth0", AcceptRA: true}}})

	var pc *icmp.PacketConn
	var ifi *net.Interface
	if err := nstest.Do(peer, func() (err error) {
		if ifi, err = net.InterfaceByName("peer0"); err != nil {
			return err
		}
		pc, err = icmp.ListenPacket("ip6:ipv6-icmp", "::")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	p6 := pc.IPv6PacketConn()
	if err := p6.SetMulticastHopLimit(255); err != nil { // RFC 4861: must be 255
		t.Fatal(err)
	}
	if err := p6.SetMulticastInterface(ifi); err != nil {
		t.Fatal(err)
	}
	ra := []byte{
		134, 0, 0, 0, // router advertisement; the kernel fills in the checksum
		64, 0, 0, 0, // hop limit, flags, router lifetime 0 (not a default router)
		0, 0, 0, 0, 0, 0, 0, 0, // reachable, retransmit
		3, 4, 64, 0xc0, // prefix information: length 64, on-link + autonomous
		0, 0, 0x0e, 0x10, 0, 0, 0x07, 0x08, 0, 0, 0, 0, // valid 3600 s, preferred 1800 s
		0xfd, 0, 0, 0x64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // fd00:64::/64
	}
	slaac := func() bool {
		for _, a := range iface(n.State(), "eth0").Addresses {
			if netip.MustParsePrefix("fd00:64::/64").Contains(a.Addr()) {
				return true
			}
		}
		return false
	}
	dst := &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: "peer0"}
	deadline := time.Now().Add(guard)
	for !slaac() {
		if time.Now().After(deadline) {
			t.Fatalf("no SLAAC address from fd00:64::/64; state %+v", iface(n.State(), "eth0"))
		}
		// Repeat: the peer's link-local address and multicast route, and
		// the box's link, take a moment after the links come up.
		if _, err := pc.WriteTo(ra, dst); err != nil {
			t.Logf("send RA: %v (retrying)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
