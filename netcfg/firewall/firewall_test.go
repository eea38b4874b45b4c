package firewall_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/eclipse-iofog/iofog-connector/internal/testpeer"
	"github.com/eclipse-iofog/iofog-connector/netcfg/firewall"
	"github.com/eclipse-iofog/iofog-connector/netcfg/internal/nstest"
	"github.com/eclipse-iofog/iofog-connector/schema"
)

const (
	// Generous "it hangs" guard for connections that must succeed.
	connectGuard = 10 * time.Second
	// How long a connection that should be dropped is given. The verdict
	// does not rest on this time: the kernel's drop counter must also rise,
	// so a slow machine cannot turn "slow" into "dropped".
	dropWait = time.Second
)

// pair is a server namespace (10.77.0.1) and a client namespace with two
// source addresses (10.77.0.2 and 10.77.0.3).
type pair struct{ server, client netns.NsHandle }

func newPair(t *testing.T) pair {
	p := pair{server: nstest.New(t), client: nstest.New(t)}
	nstest.Veth(t, p.server, "srv0", "10.77.0.1/24", p.client, "cli0", "10.77.0.2/24")
	h := nstest.Handle(t, p.client)
	l, err := h.LinkByName("cli0")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := netlinkAddr("10.77.0.3/24")
	if err := h.AddrAdd(l, a); err != nil {
		t.Fatalf("second client address: %v", err)
	}
	return p
}

// dial connects from src (client namespace) to the server's port.
func dial(p pair, src string, port int, timeout time.Duration) error {
	return nstest.Do(p.client, func() error {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", fmt.Sprintf("10.77.0.1:%d", port))
		if err != nil {
			return err
		}
		return c.Close()
	})
}

func mustConnect(t *testing.T, p pair, port int) {
	t.Helper()
	if err := dial(p, "10.77.0.2", port, connectGuard); err != nil {
		t.Errorf("port %d: want a connection, got %v", port, err)
	}
}

func mustBeDropped(t *testing.T, p pair, fw *firewall.Firewall, port int) {
	t.Helper()
	before := counter(t, fw, firewall.CounterDropped)
	err := dial(p, "10.77.0.2", port, dropWait)
	var ne net.Error
	switch {
	case err == nil:
		t.Errorf("port %d: connected, want the SYN dropped", port)
	case errors.As(err, &ne) && ne.Timeout():
		if after := counter(t, fw, firewall.CounterDropped); after <= before {
			t.Errorf("port %d: dial timed out but the firewall dropped nothing (%d -> %d)", port, before, after)
		}
	default:
		t.Errorf("port %d: want a dial timeout (dropped), got %v", port, err)
	}
}

func counter(t *testing.T, fw *firewall.Firewall, name string) uint64 {
	t.Helper()
	c, err := fw.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c[name].Packets
}

func listen(t *testing.T, ns netns.NsHandle, ports ...int) {
	for _, port := range ports {
		nstest.Listen(t, ns, fmt.Sprintf(":%d", port))
	}
}

// apply and attach close the handle's netlink socket when the test ends.
func apply(t testing.TB, r firewall.Rules, o firewall.Options) (*firewall.Firewall, error) {
	fw, err := firewall.Apply(r, o)
	if fw != nil {
		t.Cleanup(func() { fw.Close() })
	}
	return fw, err
}

func attach(t testing.TB, o firewall.Options) (*firewall.Firewall, error) {
	fw, err := firewall.Attach(o)
	if fw != nil {
		t.Cleanup(func() { fw.Close() })
	}
	return fw, err
}

func dropRules() firewall.Rules {
	return firewall.Rules{Policy: firewall.Drop, APIPort: 8080, BrokerPort: 61616}
}

func TestOnlyLiveMappingPortsAreOpen(t *testing.T) {
	p := newPair(t)
	// Pool 6000-6010, 6003 excluded; listeners everywhere, so only the
	// firewall decides.
	listen(t, p.server, 8080, 61616, 6000, 6001, 6003, 6005)
	fw, err := apply(t, dropRules(), firewall.Options{NetNS: p.server})
	if err != nil {
		t.Fatal(err)
	}
	if err := fw.OpenPorts(6000, 6001); err != nil {
		t.Fatal(err)
	}
	mustConnect(t, p, 8080)
	mustConnect(t, p, 61616)
	mustConnect(t, p, 6000)
	mustConnect(t, p, 6001)
	mustBeDropped(t, p, fw, 6005) // in the pool, no mapping
	mustBeDropped(t, p, fw, 6003) // excluded

	// Removing a mapping closes its port; the other stays open.
	if err := fw.ClosePorts(6001); err != nil {
		t.Fatal(err)
	}
	mustBeDropped(t, p, fw, 6001)
	mustConnect(t, p, 6000)

	// Idempotent: re-adding an open port and removing a closed one succeed.
	if err := fw.OpenPorts(6000); err != nil {
		t.Errorf("open an open port: %v", err)
	}
	if err := fw.ClosePorts(6001, 6009); err != nil {
		t.Errorf("close ports that are not open: %v", err)
	}
	got, err := fw.Ports()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []uint16{6000}) {
		t.Errorf("open ports = %v, want [6000]", got)
	}

	ctr, err := fw.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if ctr[firewall.CounterDropped].Packets == 0 {
		t.Errorf("dropped counter is 0 after dropped SYNs: %v", ctr)
	}
	if ctr[firewall.CounterMappings].Packets == 0 || ctr[firewall.CounterAPI].Packets == 0 {
		t.Errorf("mappings/api counters are 0 after connections: %v", ctr)
	}

	// The Prometheus collector reports the same counters.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(fw.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "iofog_firewall_packets_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == firewall.CounterDropped && m.GetCounter().GetValue() > 0 {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("iofog_firewall_packets_total{rule=\"dropped\"} missing or 0 in %v", mfs)
	}
}

func TestConcurrentOpenClose(t *testing.T) {
	p := newPair(t)
	fw, err := apply(t, dropRules(), firewall.Options{NetNS: p.server})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			port := uint16(7000 + i)
			if err := fw.OpenPorts(port, port+100); err != nil {
				t.Errorf("open %d: %v", port, err)
			}
			if err := fw.ClosePorts(port + 100); err != nil {
				t.Errorf("close %d: %v", port+100, err)
			}
		})
	}
	wg.Wait()
	got, err := fw.Ports()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 20 || got[0] != 7000 || got[19] != 7019 {
		t.Errorf("open ports = %v, want 7000..7019", got)
	}
}

func TestRateLimitIsPerSource(t *testing.T) {
	p := newPair(t)
	listen(t, p.server, 6000)
	r := dropRules()
	r.RateLimit, r.Burst = 1, 3
	fw, err := apply(t, r, firewall.Options{NetNS: p.server})
	if err != nil {
		t.Fatal(err)
	}
	if err := fw.OpenPorts(6000); err != nil {
		t.Fatal(err)
	}
	// A flood from one source: far more new connections at once than its
	// rate and burst allow. The client's view depends on timing (a busy
	// machine may time out a connection the firewall let through), so the
	// verdict comes from the kernel's counters.
	flood(30, func() { dial(p, "10.77.0.2", 6000, dropWait) })
	if n := counter(t, fw, firewall.CounterRateLimited); n == 0 {
		t.Error("a flood of 30 new connections from one source was not rate limited")
	}
	if n := counter(t, fw, firewall.CounterMappings); n == 0 {
		t.Error("the flood's first connections (within the burst) were not accepted")
	}
	// Another source right after: its SYN is not rate limited and it
	// connects. The flood's sockets are all closed, so nothing else can
	// move the counter meanwhile.
	limited := counter(t, fw, firewall.CounterRateLimited)
	if err := dial(p, "10.77.0.3", 6000, connectGuard); err != nil {
		t.Errorf("second source blocked by the first one's flood: %v", err)
	}
	if n := counter(t, fw, firewall.CounterRateLimited); n != limited {
		t.Errorf("second source's connection was rate limited (%d -> %d)", limited, n)
	}
}

// flood runs n copies of fn at once and waits for them.
func flood(n int, fn func()) {
	var wg sync.WaitGroup
	for range n {
		wg.Go(fn)
	}
	wg.Wait()
}

func TestApplyTwiceKeepsMappingsAndForeignTables(t *testing.T) {
	p := newPair(t)
	listen(t, p.server, 6000, 9090)

	// Someone else's table, which we must leave alone.
	c, err := nftables.New(nftables.WithNetNSFd(int(p.server)))
	if err != nil {
		t.Fatal(err)
	}
	other := c.AddTable(&nftables.Table{Name: "other", Family: nftables.TableFamilyIPv4})
	c.AddChain(&nftables.Chain{Name: "mine", Table: other})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}

	fw, err := apply(t, dropRules(), firewall.Options{NetNS: p.server})
	if err != nil {
		t.Fatal(err)
	}
	if err := fw.OpenPorts(6000); err != nil {
		t.Fatal(err)
	}
	r := dropRules()
	r.APIPort = 9090
	fw, err = apply(t, r, firewall.Options{NetNS: p.server})
	if err != nil {
		t.Fatalf("second apply: %v", err)
	}
	mustConnect(t, p, 9090) // new rules in force
	mustConnect(t, p, 6000) // live mapping survived
	mustBeDropped(t, p, fw, 8080)

	tables, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tb := range tables {
		names = append(names, tb.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"iofog", "other"}) {
		t.Errorf("tables after two applies = %v, want [iofog other]", names)
	}
	if _, err := c.ListChain(other, "mine"); err != nil {
		t.Errorf("foreign chain gone: %v", err)
	}

	if err := fw.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := fw.Remove(); err != nil {
		t.Errorf("second remove: %v", err)
	}
	tables, err = c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) != 1 || tables[0].Name != "other" {
		t.Errorf("tables after remove = %v, want only other", tables)
	}
	mustConnect(t, p, 6000) // no table, no filtering
}

func TestAttachUsesTheExistingTable(t *testing.T) {
	p := newPair(t)
	listen(t, p.server, 6000)
	if _, err := attach(t, firewall.Options{NetNS: p.server}); !errors.Is(err, firewall.ErrNoTable) {
		t.Fatalf("attach with no table: err = %v, want ErrNoTable", err)
	}
	owner, err := apply(t, dropRules(), firewall.Options{NetNS: p.server})
	if err != nil {
		t.Fatal(err)
	}
	child, err := attach(t, firewall.Options{NetNS: p.server})
	if err != nil {
		t.Fatal(err)
	}
	if err := child.OpenPorts(6000); err != nil {
		t.Fatal(err)
	}
	mustConnect(t, p, 6000)
	if got, _ := owner.Ports(); !slices.Equal(got, []uint16{6000}) {
		t.Errorf("owner sees ports %v, want [6000]", got)
	}
	if err := child.ClosePorts(6000); err != nil {
		t.Fatal(err)
	}
	mustBeDropped(t, p, child, 6000)
}

func TestPlainHostOnlyAccepts(t *testing.T) {
	p := newPair(t)
	listen(t, p.server, 6000, 6500)
	fw, err := apply(t, firewall.Rules{Policy: firewall.Accept, APIPort: 8080}, firewall.Options{NetNS: p.server})
	if err != nil {
		t.Fatal(err)
	}
	if err := fw.OpenPorts(6000); err != nil {
		t.Fatal(err)
	}
	// A port that is none of ours is still decided by the host: open.
	mustConnect(t, p, 6500)
	mustConnect(t, p, 6000)
	c, err := nftables.New(nftables.WithNetNSFd(int(p.server)))
	if err != nil {
		t.Fatal(err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range chains {
		if ch.Policy != nil && *ch.Policy != nftables.ChainPolicyAccept {
			t.Errorf("chain %s has policy drop on a plain host", ch.Name)
		}
	}
	if err := fw.Remove(); err != nil {
		t.Fatal(err)
	}
}

func TestForwardReachesTargetHost(t *testing.T) {
	client, gw, target := nstest.New(t), nstest.New(t), nstest.New(t)
	nstest.Veth(t, client, "c0", "10.81.0.2/24", gw, "wan0", "10.81.0.1/24")
	nstest.Veth(t, gw, "lan0", "10.82.0.1/24", target, "t0", "10.82.0.2/24")
	// The client could route to the LAN directly; only forwards may pass.
	nstest.Route(t, client, "10.82.0.0/24", "10.81.0.1")
	// The target has no route back to the client's network: replies only
	// work if the gateway masquerades.

	// The target tells each caller the address it saw.
	for _, port := range []int{9001, 7100} {
		var ln net.Listener
		if err := nstest.Do(target, func() (err error) {
			ln, err = net.Listen("tcp", fmt.Sprintf("10.82.0.2:%d", port))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		testpeer.Serve(t, ln, func(c net.Conn) {
			fmt.Fprintf(c, "%d %s", port, c.RemoteAddr().(*net.TCPAddr).IP)
		})
	}

	r := dropRules()
	r.Forwards = []schema.Forward{
		{Interface: "wan0", Protocol: "tcp", Ports: "7000-7002", To: "10.82.0.2", ToPort: 9000},
		{Interface: "wan0", Protocol: "tcp", Ports: "7100", To: "10.82.0.2"},
	}
	fw, err := apply(t, r, firewall.Options{NetNS: gw})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fw.Remove() })

	ask := func(addr string, timeout time.Duration) (string, error) {
		var reply []byte
		err := nstest.Do(client, func() error {
			c, err := net.DialTimeout("tcp", addr, timeout)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(connectGuard))
			reply, err = io.ReadAll(c)
			return err
		})
		return string(reply), err
	}
	for addr, want := range map[string]string{
		"10.81.0.1:7001": "9001 10.82.0.1", // range with offset, masqueraded
		"10.81.0.1:7100": "7100 10.82.0.1", // same port
	} {
		got, err := ask(addr, connectGuard)
		if err != nil || got != want {
			t.Errorf("%s: got %q, %v; want %q", addr, got, err, want)
		}
	}
	// Routing straight to the LAN is not a configured flow: dropped.
	if _, err := ask("10.82.0.2:9001", dropWait); err == nil {
		t.Errorf("direct forward to the LAN host passed the gateway")
	}
	ctr, err := fw.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if ctr[firewall.CounterForwarded].Packets == 0 || ctr[firewall.CounterForwardDenied].Packets == 0 {
		t.Errorf("forward counters not counting: %v", ctr)
	}
}

func TestRejectsBadForward(t *testing.T) {
	good := firewall.Rules{Forwards: []schema.Forward{{Interface: "eth0", Ports: "100-200", To: "10.0.0.1", ToPort: 9000}}}
	if err := good.Validate(); err != nil {
		t.Errorf("valid forward rejected: %v", err)
	}
	for _, f := range []schema.Forward{
		{Interface: "", Ports: "80", To: "10.0.0.1"},
		{Interface: "eth0", Protocol: "sctp", Ports: "80", To: "10.0.0.1"},
		{Interface: "eth0", Ports: "90-80", To: "10.0.0.1"},
		{Interface: "eth0", Ports: "80", To: "host.example"},
		{Interface: "eth0", Ports: "65000-70000", To: "10.0.0.1"},
		{Interface: "eth0", Ports: "0", To: "10.0.0.1"},
		{Interface: "eth0", Ports: "80", To: "fd00::5"},
		{Interface: "eth0", Ports: "100-200", To: "10.0.0.1", ToPort: 65500},
	} {
		if err := (firewall.Rules{Forwards: []schema.Forward{f}}).Validate(); err == nil {
			t.Errorf("%+v: accepted", f)
		}
	}
}

func TestRulesFromConfig(t *testing.T) {
	cfg := &schema.Config{Broker: 61616, Dev: true, API: schema.API{HTTPPort: 8080, HTTPSPort: 443},
		Firewall: schema.Firewall{RateLimit: 20, Burst: 40,
			Forward: []schema.Forward{{Interface: "eth1", Ports: "80", To: "10.0.0.2"}}}}
	app := firewall.RulesFromConfig(cfg, true)
	if app.Policy != firewall.Drop || app.APIPort != 8080 || app.BrokerPort != 61616 ||
		app.RateLimit != 20 || app.Burst != 40 || len(app.Forwards) != 1 {
		t.Errorf("appliance rules = %+v", app)
	}
	cfg.Dev = false
	host := firewall.RulesFromConfig(cfg, false)
	if host.Policy != firewall.Accept || host.APIPort != 443 || host.RateLimit != 0 || len(host.Forwards) != 0 {
		t.Errorf("plain host rules = %+v, want accept-only for 443 and the broker", host)
	}
}

func TestIPv6MappingPortsAndRateLimit(t *testing.T) {
	server, client := nstest.New(t), nstest.New(t)
	nstest.Veth(t, server, "srv0", "fd00:77::1/64", client, "cli0", "fd00:77::2/64")
	h := nstest.Handle(t, client)
	l, _ := h.LinkByName("cli0")
	second, _ := netlinkAddr("fd00:77::3/64")
	second.Flags |= unix.IFA_F_NODAD
	if err := h.AddrAdd(l, second); err != nil {
		t.Fatal(err)
	}
	listen(t, server, 6000, 6005)
	r := dropRules()
	r.RateLimit, r.Burst = 1, 3
	fw, err := apply(t, r, firewall.Options{NetNS: server})
	if err != nil {
		t.Fatal(err)
	}
	if err := fw.OpenPorts(6000); err != nil {
		t.Fatal(err)
	}
	dial6 := func(src string, port int, timeout time.Duration) error {
		return nstest.Do(client, func() error {
			d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			c, err := d.Dial("tcp", fmt.Sprintf("[fd00:77::1]:%d", port))
			if err != nil {
				return err
			}
			return c.Close()
		})
	}
	if err := dial6("fd00:77::2", 6000, connectGuard); err != nil {
		t.Errorf("IPv6 to a live mapping port: %v", err)
	}
	before := counter(t, fw, firewall.CounterDropped)
	var ne net.Error
	if err := dial6("fd00:77::2", 6005, dropWait); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("IPv6 to a port with no mapping: %v, want dropped (timeout)", err)
	}
	if counter(t, fw, firewall.CounterDropped) <= before {
		t.Error("IPv6 to a port with no mapping: nothing dropped")
	}
	flood(30, func() { dial6("fd00:77::2", 6000, dropWait) })
	limited := counter(t, fw, firewall.CounterRateLimited)
	if limited == 0 {
		t.Error("IPv6 flood from one source was not rate limited")
	}
	if err := dial6("fd00:77::3", 6000, connectGuard); err != nil {
		t.Errorf("second IPv6 source blocked by the first one's flood: %v", err)
	}
	if n := counter(t, fw, firewall.CounterRateLimited); n != limited {
		t.Errorf("second IPv6 source was rate limited (%d -> %d)", limited, n)
	}
}

// BenchmarkOpenClosePort measures one mapping's firewall round trip: open
// its port, then close it (two netlink batches).
func BenchmarkOpenClosePort(b *testing.B) {
	ns := nstest.New(b)
	fw, err := apply(b, dropRules(), firewall.Options{NetNS: ns})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		p := uint16(10000 + i%50000)
		if err := fw.OpenPorts(p); err != nil {
			b.Fatal(err)
		}
		if err := fw.ClosePorts(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApply measures replacing the whole table with 1000 live ports.
func BenchmarkApply(b *testing.B) {
	ns := nstest.New(b)
	fw, err := apply(b, dropRules(), firewall.Options{NetNS: ns})
	if err != nil {
		b.Fatal(err)
	}
	ports := make([]uint16, 1000)
	for i := range ports {
		ports[i] = uint16(20000 + i)
	}
	if err := fw.OpenPorts(ports...); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		again, err := firewall.Apply(dropRules(), firewall.Options{NetNS: ns})
		if err != nil {
			b.Fatal(err)
		}
		again.Close()
	}
}
