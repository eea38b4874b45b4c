// Package firewall owns one nftables table (inet "iofog") that decides which
// ports of this machine answer: the control API, the broker, and the ports of
// mappings that exist right now. It is programmed over netlink
// (google/nftables); no nft or iptables binary is needed.
//
// Two ways to use it:
//
//   - Apply builds the whole table and replaces any previous version of it in
//     one netlink batch (add, delete, add: the kernel sees one transaction), so
//     the machine is never half-filtered. Other tables are never touched.
//     Mapping ports already in the live set survive a re-apply.
//   - Attach finds a table that someone else applied (the appliance's PID 1)
//     and only adds and deletes elements of its mapping-port set.
//
// OpenPorts and ClosePorts change the set "mapping_ports" element by element;
// both are idempotent and safe for concurrent use. Counters reads the
// rules' counters by name (each counting rule carries its name as its
// comment), and Collector exports them to Prometheus.
//
// Policy Drop is the appliance: everything not listed is dropped, new
// connections to mapping ports are rate limited per source address, and
// forwarding is allowed only for configured DNAT flows. Policy Accept is a
// plain host: the table only adds accept rules and never changes what the
// host's own rules decide.
package firewall

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/eclipse-iofog/iofog-connector/netcfg/internal/nsutil"
	"github.com/eclipse-iofog/iofog-connector/schema"
)

// DefaultTable is the name of the table the Connector owns.
const DefaultTable = "iofog"

// Names of the sets and chains in our table; tests and operators
// (`nft list table inet iofog`) see these.
const (
	SetMappingPorts = "mapping_ports"
	setFlood4       = "flood4"
	setFlood6       = "flood6"
	chainInput      = "input"
	chainForward    = "forward"
	chainPrerouting = "prerouting"
	chainPostroute  = "postrouting"
)

// Policy is what happens to input not matched by any of our rules.
type Policy int

const (
	// Accept leaves the decision to the host's other rules (plain host).
	Accept Policy = iota
	// Drop drops everything not explicitly allowed (appliance).
	Drop
)

func (p Policy) String() string {
	if p == Drop {
		return "drop"
	}
	return "accept"
}

// Rules describes the table Apply builds.
type Rules struct {
	Policy  Policy
	APIPort uint16 // 0: none
	// APIAllow lists the source addresses and CIDR networks that may reach
	// the API port (api.allow); empty means every source. Loopback is
	// always accepted.
	APIAllow   []string
	BrokerPort uint16 // 0: none
	// RateLimit is new connections per second per source address on
	// mapping ports; 0 turns the limit off. Burst is the extra allowance.
	// Only with Policy Drop: a plain host gets accept rules only.
	RateLimit int
	Burst     int
	// Forwards are DNAT port forwards (gateway deployments).
	Forwards []schema.Forward
}

// Options choose where the table lives.
type Options struct {
	// Table names the table; "" means DefaultTable.
	Table string
	// NetNS is the network namespace to program; 0 means the caller's.
	// Tests use it; the appliance leaves it 0.
	NetNS netns.NsHandle
}

// ErrNoTable is returned by Attach when the table does not exist.
var ErrNoTable = errors.New("firewall table does not exist")

// Firewall is a handle on our table.
type Firewall struct {
	opts  Options
	table *nftables.Table
	ports *nftables.Set

	mu sync.Mutex // serialises use of conn
	// conn is one netlink socket kept for the handle's life: opening and
	// closing one per change costs ten times the change itself.
	conn *nftables.Conn
	// prevForward is the ip_forward value before Apply turned it on; ""
	// when Apply did not change it.
	prevForward string
}

func (o Options) tableName() string {
	if o.Table == "" {
		return DefaultTable
	}
	return o.Table
}

func (o Options) conn() (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.AsLasting()}
	if o.NetNS != 0 {
		opts = append(opts, nftables.WithNetNSFd(int(o.NetNS)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink socket: %w (is the nf_tables module available?)", err)
	}
	return c, nil
}

func newHandle(o Options) (*Firewall, error) {
	c, err := o.conn()
	if err != nil {
		return nil, err
	}
	t := &nftables.Table{Name: o.tableName(), Family: nftables.TableFamilyINet}
	return &Firewall{
		opts:  o,
		conn:  c,
		table: t,
		ports: &nftables.Set{Table: t, Name: SetMappingPorts, KeyType: nftables.TypeInetService},
	}, nil
}

// Close releases the netlink socket. The table stays as it is.
func (f *Firewall) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conn.CloseLasting()
}

// Apply replaces our table with one built from r, atomically, keeping the
// mapping ports that are open in the current table (so a re-apply while the
// Connector runs does not close live mappings).
func Apply(r Rules, o Options) (*Firewall, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	f, err := newHandle(o)
	if err != nil {
		return nil, err
	}
	c := f.conn
	keep, err := f.livePorts()
	if err != nil && !errors.Is(err, ErrNoTable) {
		c.CloseLasting()
		return nil, err
	}
	// Adding first makes the delete valid whether or not the table existed;
	// the kernel applies the whole batch or none of it.
	c.AddTable(f.table)
	c.DelTable(f.table)
	if err := build(c, f.table, f.ports, r, keep); err != nil {
		c.CloseLasting()
		return nil, err
	}
	if err := c.Flush(); err != nil {
		c.CloseLasting()
		return nil, fmt.Errorf("apply nftables table inet %s: %w", f.table.Name, err)
	}
	// Forwarding goes on only once the forward chain is there to limit it
	// to the declared flows.
	if len(r.Forwards) > 0 {
		prev, err := f.setForwarding("1")
		if err != nil {
			c.CloseLasting()
			return nil, err
		}
		if prev != "1" {
			f.prevForward = prev
		}
	}
	return f, nil
}

// Attach returns a handle on an existing table, or ErrNoTable.
func Attach(o Options) (*Firewall, error) {
	f, err := newHandle(o)
	if err != nil {
		return nil, err
	}
	if _, err := f.conn.GetSetByName(f.table, SetMappingPorts); err != nil {
		f.conn.CloseLasting()
		if isNotExist(err) {
			return nil, fmt.Errorf("attach to table inet %s: %w", f.table.Name, ErrNoTable)
		}
		return nil, fmt.Errorf("attach to table inet %s: %w", f.table.Name, err)
	}
	return f, nil
}

// Table is the table's name.
func (f *Firewall) Table() string { return f.table.Name }

// OpenPorts adds ports to the live mapping set. Ports already open are fine.
func (f *Firewall) OpenPorts(ports ...uint16) error {
	if len(ports) == 0 {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.conn
	if err := c.SetAddElements(f.ports, portElems(ports)); err != nil {
		return fmt.Errorf("open ports %v: %w", ports, err)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("open ports %v in set inet %s %s: %w", ports, f.table.Name, SetMappingPorts, err)
	}
	return nil
}

// ClosePorts removes ports from the live mapping set. Ports not open are fine.
func (f *Firewall) ClosePorts(ports ...uint16) error {
	if len(ports) == 0 {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.conn
	// Adding before deleting in the same batch makes deleting a missing
	// element succeed on every kernel (DESTROYSETELEM needs 6.3).
	elems := portElems(ports)
	if err := c.SetAddElements(f.ports, elems); err != nil {
		return fmt.Errorf("close ports %v: %w", ports, err)
	}
	if err := c.SetDeleteElements(f.ports, elems); err != nil {
		return fmt.Errorf("close ports %v: %w", ports, err)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("close ports %v in set inet %s %s: %w", ports, f.table.Name, SetMappingPorts, err)
	}
	return nil
}

// Ports lists the open mapping ports, sorted.
func (f *Firewall) Ports() ([]uint16, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.livePorts()
}

func (f *Firewall) livePorts() ([]uint16, error) {
	elems, err := f.conn.GetSetElements(f.ports)
	if err != nil {
		if isNotExist(err) {
			return nil, ErrNoTable
		}
		return nil, fmt.Errorf("read set inet %s %s: %w", f.table.Name, SetMappingPorts, err)
	}
	out := make([]uint16, 0, len(elems))
	for _, e := range elems {
		if len(e.Key) >= 2 {
			out = append(out, binaryutil.BigEndian.Uint16(e.Key[:2]))
		}
	}
	slices.Sort(out)
	return out, nil
}

// Remove deletes our table (and undoes ip_forward if Apply turned it on).
// Removing a table that is already gone is not an error.
func (f *Firewall) Remove() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.conn
	c.AddTable(f.table)
	c.DelTable(f.table)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("remove nftables table inet %s: %w", f.table.Name, err)
	}
	if f.prevForward != "" {
		if _, err := f.setForwarding(f.prevForward); err != nil {
			return err
		}
		f.prevForward = ""
	}
	return nil
}

func portElems(ports []uint16) []nftables.SetElement {
	out := make([]nftables.SetElement, len(ports))
	for i, p := range ports {
		out[i] = nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(p)}
	}
	return out
}

func isNotExist(err error) bool {
	// google/nftables wraps netlink errors with %v in places, losing the
	// errno; the text is all that is left.
	return errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist) ||
		strings.Contains(err.Error(), "no such file or directory")
}

const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// setForwarding writes net.ipv4.ip_forward in our namespace and returns the
// previous value. IPv6 forwarding is set alongside when it exists.
func (f *Firewall) setForwarding(v string) (prev string, err error) {
	err = nsutil.Do(f.opts.NetNS, func() error {
		b, err := os.ReadFile(ipForwardPath)
		if err != nil {
			return fmt.Errorf("read %s: %w", ipForwardPath, err)
		}
		prev = strings.TrimSpace(string(b))
		if err := os.WriteFile(ipForwardPath, []byte(v), 0o644); err != nil {
			return fmt.Errorf("enable forwarding for port forwards: write %s: %w", ipForwardPath, err)
		}
		return nil
	})
	return prev, err
}
