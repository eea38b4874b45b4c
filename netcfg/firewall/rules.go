package firewall

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/eclipse-iofog/iofog-connector/schema"
)

// Counter names: each counting rule is tagged with one (as its comment),
// and Counters sums the rules' counters by name.
const (
	CounterEstablished   = "established"
	CounterLoopback      = "loopback"
	CounterICMP          = "icmp"
	CounterDHCP          = "dhcp"
	CounterAPI           = "api"
	CounterBroker        = "broker"
	CounterMappings      = "mappings"
	CounterRateLimited   = "rate_limited"
	CounterDropped       = "dropped"
	CounterForwarded     = "forwarded"
	CounterForwardDenied = "forward_dropped"
)

// Our chains run just before the usual filter priority so operators can
// tell them apart from the host's own chains in `nft list ruleset`.
const ourPriority nftables.ChainPriority = -10

// ICMP stays answerable but cannot be used to flood the box.
const (
	icmpRate  = 20
	icmpBurst = 50
	// Entries in the per-source meter expire after this long without traffic.
	meterTimeout = time.Minute
	meterSize    = 65535
)

// ctStatusDNAT is IPS_DST_NAT from linux/netfilter/nf_conntrack_common.h:
// the connection was destination-NATed, i.e. it is one of our forwards.
const ctStatusDNAT = 1 << 5

// RulesFromConfig derives the rules from the config. The appliance gets the
// drop policy, the per-source rate limit and the port forwards; a plain host
// gets accept rules for the API, the broker and mapping ports only, so the
// host's own firewall keeps deciding everything else.
func RulesFromConfig(cfg *schema.Config, appliance bool) Rules {
	r := Rules{
		Policy:     Accept,
		APIPort:    uint16(cfg.API.Port(cfg.Dev)),
		APIAllow:   cfg.API.Allow,
		BrokerPort: uint16(cfg.Broker),
	}
	if appliance {
		r.Policy = Drop
		r.RateLimit = cfg.Firewall.RateLimit
		r.Burst = cfg.Firewall.Burst
		r.Forwards = cfg.Firewall.Forward
	}
	return r
}

// Validate checks r without touching the kernel.
func (r Rules) Validate() error {
	if r.RateLimit < 0 || r.Burst < 0 {
		return fmt.Errorf("firewall: rate_limit (%d) and burst (%d) must not be negative", r.RateLimit, r.Burst)
	}
	for i, fw := range r.Forwards {
		if _, err := parseForward(fw); err != nil {
			return fmt.Errorf("firewall: forward[%d]: %w", i, err)
		}
	}
	if _, err := r.apiAllow(); err != nil {
		return err
	}
	return nil
}

// apiAllow parses APIAllow; nil means every source.
func (r Rules) apiAllow() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, s := range r.APIAllow {
		p, err := schema.ParseAllow(s)
		if err != nil {
			return nil, fmt.Errorf("firewall: api allow[%d]: %w", i, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// sourceIn matches packets whose source address is in p (IPv4 or IPv6).
func sourceIn(p netip.Prefix) []expr.Any {
	nfproto, off := byte(unix.NFPROTO_IPV4), uint32(12)
	if p.Addr().Is6() {
		nfproto, off = unix.NFPROTO_IPV6, 8
	}
	n := uint32(p.Addr().BitLen() / 8)
	out := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
	}
	if p.Bits() == 0 {
		return out
	}
	out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n})
	if p.Bits() < p.Addr().BitLen() {
		mask := make([]byte, n)
		for i := range p.Bits() {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)})
	}
	return append(out, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()})
}

// forward is a schema.Forward checked and decoded.
type forward struct {
	iface      string
	proto      byte
	from, to   uint16 // inbound port range
	target     netip.Addr
	targetPort uint16 // 0: keep the port
}

func parseForward(f schema.Forward) (forward, error) {
	var out forward
	if f.Interface == "" || len(f.Interface) >= unix.IFNAMSIZ {
		return out, fmt.Errorf("interface %q: give the inbound interface name (at most %d characters)", f.Interface, unix.IFNAMSIZ-1)
	}
	out.iface = f.Interface
	switch f.Protocol {
	case "tcp", "":
		out.proto = unix.IPPROTO_TCP
	case "udp":
		out.proto = unix.IPPROTO_UDP
	default:
		return out, fmt.Errorf("protocol %q: use \"tcp\" or \"udp\"", f.Protocol)
	}
	lo, hi, ok := strings.Cut(f.Ports, "-")
	if !ok {
		hi = lo
	}
	a, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	b, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if err1 != nil || err2 != nil || a == 0 || b < a {
		return out, fmt.Errorf("ports %q: use \"N\" or \"A-B\" with 1 <= A <= B <= 65535", f.Ports)
	}
	out.from, out.to = uint16(a), uint16(b)
	t, err := netip.ParseAddr(f.To)
	if err != nil || t.Zone() != "" {
		return out, fmt.Errorf("to %q: give the target host's IPv4 or IPv6 address", f.To)
	}
	out.target = t.Unmap()
	if out.target.Is6() {
		// IPv6 forwarding would have to be switched on for all interfaces,
		// which turns off router advertisements (SLAAC) on every one.
		return out, fmt.Errorf("to %q: forwards to IPv6 hosts are not supported; give an IPv4 address", f.To)
	}
	if f.ToPort < 0 || f.ToPort > 65535 || (f.ToPort > 0 && f.ToPort+int(b-a) > 65535) {
		return out, fmt.Errorf("to_port %d: the target range must end at or below 65535", f.ToPort)
	}
	out.targetPort = uint16(f.ToPort)
	return out, nil
}

// build queues the whole table on c. keep are mapping ports to carry over.
func build(c *nftables.Conn, t *nftables.Table, ports *nftables.Set, r Rules, keep []uint16) error {
	c.AddTable(t)

	// Each counting rule carries an anonymous counter and its name as the
	// rule's comment (shown by `nft list table inet iofog`). Named counter
	// objects would need the nft_objref module, which not every kernel
	// (nor the appliance image) has.
	names := map[expr.Any]string{}
	count := func(name string) []expr.Any {
		ctr := &expr.Counter{}
		names[ctr] = name
		return []expr.Any{ctr}
	}

	if err := c.AddSet(ports, portElems(keep)); err != nil {
		return fmt.Errorf("firewall: set %s: %w", SetMappingPorts, err)
	}

	policy := nftables.ChainPolicyAccept
	if r.Policy == Drop {
		policy = nftables.ChainPolicyDrop
	}
	input := c.AddChain(&nftables.Chain{
		Name: chainInput, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRef(ourPriority), Policy: &policy,
	})
	add := func(ch *nftables.Chain, exprs ...expr.Any) {
		r := &nftables.Rule{Table: t, Chain: ch, Exprs: exprs}
		for _, e := range exprs {
			if name, ok := names[e]; ok {
				r.UserData = userdata.AppendString(nil, userdata.TypeComment, name)
			}
		}
		c.AddRule(r)
	}

	add(input, join(ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), count(CounterEstablished), accept())...)
	if r.Policy == Drop {
		add(input, join(ctState(expr.CtStateBitINVALID), count(CounterDropped), drop())...)
	}
	add(input, join(ifname(unix.NFT_META_IIFNAME, "lo"), count(CounterLoopback), accept())...)
	for _, p := range []byte{unix.IPPROTO_ICMP, unix.IPPROTO_ICMPV6} {
		add(input, join(l4proto(p),
			[]expr.Any{&expr.Limit{Type: expr.LimitTypePkts, Rate: icmpRate, Unit: expr.LimitTimeSecond, Burst: icmpBurst}},
			count(CounterICMP), accept())...)
	}
	add(input, join(l4proto(unix.IPPROTO_UDP), port(0, 67), port(2, 68), count(CounterDHCP), accept())...)
	if r.APIPort != 0 {
		allow, err := r.apiAllow()
		if err != nil {
			return err
		}
		if len(allow) == 0 {
			add(input, join(l4proto(unix.IPPROTO_TCP), port(2, r.APIPort), count(CounterAPI), accept())...)
		}
		// With an allow list, other sources fall through: dropped on the
		// appliance, left to the host's own rules on a plain host (where
		// the API server refuses them itself).
		for _, p := range allow {
			add(input, join(sourceIn(p), l4proto(unix.IPPROTO_TCP), port(2, r.APIPort), count(CounterAPI), accept())...)
		}
	}
	if r.BrokerPort != 0 && r.BrokerPort != r.APIPort {
		add(input, join(l4proto(unix.IPPROTO_TCP), port(2, r.BrokerPort), count(CounterBroker), accept())...)
	}

	if r.Policy == Drop && r.RateLimit > 0 {
		// A meter per address family: the set remembers each source for a
		// minute and carries its own token bucket; "over" matches once the
		// source has used up its rate and burst.
		for _, fam := range []struct {
			name    string
			nfproto byte
			keyType nftables.SetDatatype
			off     uint32
			size    uint32
		}{
			{setFlood4, unix.NFPROTO_IPV4, nftables.TypeIPAddr, 12, 4},
			{setFlood6, unix.NFPROTO_IPV6, nftables.TypeIP6Addr, 8, 16},
		} {
			meter := &nftables.Set{Table: t, Name: fam.name, KeyType: fam.keyType,
				Dynamic: true, HasTimeout: true, Timeout: meterTimeout, Size: meterSize}
			if err := c.AddSet(meter, nil); err != nil {
				return fmt.Errorf("firewall: set %s: %w", fam.name, err)
			}
			add(input, join(
				[]expr.Any{
					&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam.nfproto}},
				},
				l4proto(unix.IPPROTO_TCP), portInSet(ports), ctState(expr.CtStateBitNEW),
				[]expr.Any{
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.off, Len: fam.size},
					&expr.Dynset{SrcRegKey: 1, SetName: fam.name, Operation: unix.NFT_DYNSET_OP_UPDATE,
						Exprs: []expr.Any{&expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(r.RateLimit),
							Unit: expr.LimitTimeSecond, Burst: uint32(r.Burst), Over: true}}},
				},
				count(CounterRateLimited), drop())...)
		}
	}
	add(input, join(l4proto(unix.IPPROTO_TCP), portInSet(ports), count(CounterMappings), accept())...)
	if r.Policy == Drop {
		add(input, count(CounterDropped)...)
	}

	// Forwarding: on the appliance nothing is routed except configured
	// DNAT flows; on a plain host our chain accepts and decides nothing.
	fwd := c.AddChain(&nftables.Chain{
		Name: chainForward, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(ourPriority), Policy: &policy,
	})
	add(fwd, join(ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), accept())...)
	add(fwd, join(ctStatus(ctStatusDNAT), count(CounterForwarded), accept())...)
	if r.Policy == Drop {
		add(fwd, count(CounterForwardDenied)...)
	}

	if len(r.Forwards) > 0 {
		if err := buildNAT(c, t, r.Forwards, add); err != nil {
			return err
		}
	}
	return nil
}

func buildNAT(c *nftables.Conn, t *nftables.Table, fws []schema.Forward, add func(*nftables.Chain, ...expr.Any)) error {
	pre := c.AddChain(&nftables.Chain{
		Name: chainPrerouting, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest,
	})
	post := c.AddChain(&nftables.Chain{
		Name: chainPostroute, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
	})
	for i, raw := range fws {
		f, err := parseForward(raw)
		if err != nil {
			return fmt.Errorf("firewall: forward[%d]: %w", i, err)
		}
		// IPv4 only (parseForward refuses IPv6 targets): the destination
		// address is at offset 16 of the IPv4 header.
		const nfproto, addrOff, addrLen = byte(unix.NFPROTO_IPV4), 16, 4
		match := join(
			[]expr.Any{
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
			},
			ifname(unix.NFT_META_IIFNAME, f.iface),
			l4proto(f.proto),
			[]expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}},
		)
		if f.from == f.to {
			match = append(match, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(f.from)})
		} else {
			match = append(match, &expr.Range{Op: expr.CmpOpEq, Register: 1,
				FromData: binaryutil.BigEndian.PutUint16(f.from), ToData: binaryutil.BigEndian.PutUint16(f.to)})
		}
		nat := &expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(nfproto), RegAddrMin: 1}
		switch {
		case f.targetPort == 0:
			// Ports pass through unchanged.
		case f.from == f.to:
			match = append(match, &expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(f.targetPort)})
			nat.RegProtoMin = 2
		default:
			// A range moved to another range: a map from each inbound port
			// to its target port keeps the offset.
			m := &nftables.Set{Table: t, Name: fmt.Sprintf("forward%d_ports", i), IsMap: true,
				Constant: true, KeyType: nftables.TypeInetService, DataType: nftables.TypeInetService}
			elems := make([]nftables.SetElement, 0, int(f.to-f.from)+1)
			for p := int(f.from); p <= int(f.to); p++ {
				elems = append(elems, nftables.SetElement{
					Key: binaryutil.BigEndian.PutUint16(uint16(p)),
					Val: binaryutil.BigEndian.PutUint16(uint16(p - int(f.from) + int(f.targetPort))),
				})
			}
			if err := c.AddSet(m, elems); err != nil {
				return fmt.Errorf("firewall: forward[%d] port map: %w", i, err)
			}
			match = append(match, &expr.Lookup{SourceRegister: 1, DestRegister: 2, IsDestRegSet: true, SetName: m.Name, SetID: m.ID})
			nat.RegProtoMin = 2
		}
		match = append(match, &expr.Immediate{Register: 1, Data: f.target.AsSlice()})
		add(pre, append(match, nat)...)

		// Replies must come back through us, so the target sees our address.
		add(post, join(
			[]expr.Any{
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
			},
			ctStatus(ctStatusDNAT),
			[]expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: addrOff, Len: addrLen},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: f.target.AsSlice()},
				&expr.Masq{},
			},
		)...)
	}
	return nil
}

func join(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func accept() []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}} }
func drop() []expr.Any   { return []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}} }

func ctState(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

func ctStatus(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

func ifname(key expr.MetaKey, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b},
	}
}

func l4proto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

// port matches the transport header's source (off 0) or destination (off 2)
// port; the protocol must have been matched before.
func port(off uint32, p uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p)},
	}
}

func portInSet(s *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
	}
}
