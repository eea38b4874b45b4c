// Package nstest gives tests real network namespaces and veth pairs, so that
// netcfg's tests send real packets through the real kernel without touching
// the host's network. Every namespace is anonymous (no name to collide with a
// parallel run) and goes away when the test ends.
package nstest

import (
	"net"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/eclipse-iofog/iofog-connector/internal/testenv"
	"github.com/eclipse-iofog/iofog-connector/internal/testpeer"
	"github.com/eclipse-iofog/iofog-connector/netcfg/internal/nsutil"
)

// Require fails the test unless it can create namespaces and program
// nftables (root). With IOFOG_SKIP_PRIVILEGED=1 it skips instead.
func Require(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t, "CAP_NET_ADMIN and CAP_SYS_ADMIN to create network namespaces and program nftables")
}

// New returns a fresh network namespace with lo up; it is closed at cleanup.
func New(t testing.TB) netns.NsHandle {
	t.Helper()
	Require(t)
	ns, err := newNS()
	if err != nil {
		t.Fatalf("create network namespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	h := Handle(t, ns)
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatalf("find lo: %v", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatalf("set lo up: %v", err)
	}
	return ns
}

func newNS() (netns.NsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return 0, err
	}
	defer orig.Close()
	ns, err := netns.New() // unshares this thread into the new namespace
	if err != nil {
		return 0, err
	}
	if err := netns.Set(orig); err != nil {
		runtime.LockOSThread() // thread stays in the wrong namespace: let it die
		ns.Close()
		return 0, err
	}
	return ns, nil
}

// Handle returns a netlink handle bound to ns, closed at cleanup.
func Handle(t testing.TB, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("netlink handle in namespace: %v", err)
	}
	t.Cleanup(h.Close)
	return h
}

// Do runs fn on an OS thread switched into ns. Sockets created inside fn
// belong to ns for their whole life, whichever goroutine uses them later.
func Do(ns netns.NsHandle, fn func() error) error { return nsutil.Do(ns, fn) }

// Veth links namespace a and b with a veth pair named nameA/nameB, gives each
// end the CIDR address given ("" for none) and sets both up.
func Veth(t testing.TB, a netns.NsHandle, nameA, addrA string, b netns.NsHandle, nameB, addrB string) {
	t.Helper()
	ha := Handle(t, a)
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: nameA},
		PeerName:      nameB,
		PeerNamespace: netlink.NsFd(b),
	}
	if err := ha.LinkAdd(veth); err != nil {
		t.Fatalf("create veth %s/%s: %v", nameA, nameB, err)
	}
	hb := Handle(t, b)
	for _, end := range []struct {
		h          *netlink.Handle
		name, addr string
	}{{ha, nameA, addrA}, {hb, nameB, addrB}} {
		l, err := end.h.LinkByName(end.name)
		if err != nil {
			t.Fatalf("find %s: %v", end.name, err)
		}
		if end.addr != "" {
			a, err := netlink.ParseAddr(end.addr)
			if err != nil {
				t.Fatalf("address %s: %v", end.addr, err)
			}
			a.Flags |= unix.IFA_F_NODAD // usable at once, IPv6 included
			if err := end.h.AddrAdd(l, a); err != nil {
				t.Fatalf("add %s to %s: %v", end.addr, end.name, err)
			}
		}
		if err := end.h.LinkSetUp(l); err != nil {
			t.Fatalf("set %s up: %v", end.name, err)
		}
	}
}

// Route adds a route in ns: to (CIDR, or "default") via gw.
func Route(t testing.TB, ns netns.NsHandle, to, gw string) {
	t.Helper()
	h := Handle(t, ns)
	r := &netlink.Route{Gw: net.ParseIP(gw)}
	if to != "default" {
		_, dst, err := net.ParseCIDR(to)
		if err != nil {
			t.Fatalf("route %s: %v", to, err)
		}
		r.Dst = dst
	}
	if err := h.RouteAdd(r); err != nil {
		t.Fatalf("route %s via %s: %v", to, gw, err)
	}
}

// Listen opens a TCP listener on addr inside ns that accepts and then
// closes every connection; it stops at cleanup.
func Listen(t testing.TB, ns netns.NsHandle, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := Do(ns, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	testpeer.Serve(t, ln, testpeer.Close)
	return ln
}
