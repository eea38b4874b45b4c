package schema

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	cueerrors "cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/token"
	"github.com/agext/levenshtein"
)

// loader validates one user value against the schema. CUE stops reporting
// after the first kind of failure it meets in a struct, so rather than one
// Validate call over the whole unification the loader walks the user's
// fields itself: closedness and required fields per struct, then each value
// unified with its part of the schema. Every problem is reported, each at
// its own line.
type loader struct {
	c      *collector
	def    cue.Value
	user   *cue.Value
	labels map[string]token.Pos // field path -> position of its name in the file
	values map[string]token.Pos // field path -> position of its value in the file
	// jsonLabels: CUE's JSON reader puts a key's position after its
	// opening quote; reports point at the quote, as for values.
	jsonLabels bool
	// patterns maps the schema's regular expressions to plain words.
	patterns map[string]string
}

func (l *loader) run() (*Config, error) {
	l.walk(*l.user, l.def, nil)
	if len(l.c.errs) > 0 {
		// Still check the rules between fields that are fine on their
		// own, so one round of edits can fix everything.
		cfg, ok := l.partial()
		l.crossChecks(cfg, ok)
		return nil, l.c.result()
	}
	// Each part is fine on its own; now the whole, with the schema's
	// defaults and any constraints between fields.
	full := l.def.Unify(*l.user)
	if err := full.Validate(cue.Concrete(true)); err != nil {
		l.c.addCUE(err, l.posOf)
		return nil, l.c.result()
	}
	cfg, err := decode(full)
	if err != nil {
		l.c.add(token.NoPos, nil, "cannot decode the validated config: "+err.Error())
		return nil, l.c.result()
	}
	l.crossChecks(cfg, func(string) bool { return true })
	if len(l.c.errs) > 0 {
		return nil, l.c.result()
	}
	return cfg, nil
}

func (l *loader) walk(u, s cue.Value, p path) {
	uk, sk := u.IncompleteKind(), s.IncompleteKind()
	switch {
	case uk == cue.StructKind && sk&cue.StructKind != 0:
		l.walkStruct(u, s, p)
	case uk == cue.ListKind && sk&cue.ListKind != 0:
		it, err := u.List()
		if err != nil {
			l.c.addCUE(err, l.posOf)
			return
		}
		es := s.LookupPath(cue.MakePath(cue.AnyIndex))
		for i := 0; it.Next(); i++ {
			l.walk(it.Value(), es, p.idx(i))
		}
	default:
		l.leaf(u, s, p)
	}
}

func (l *loader) walkStruct(u, s cue.Value, p path) {
	it, err := u.Fields()
	if err != nil {
		l.c.addCUE(err, l.posOf)
		return
	}
	present := map[string]bool{}
	for it.Next() {
		name := it.Selector().Unquoted()
		present[name] = true
		fp := p.field(name)
		fs, ok := lookupField(s, name)
		if !ok {
			l.unknownField(s, fp, name)
			continue
		}
		l.walk(it.Value(), fs, fp)
	}
	sit, err := s.Fields(cue.Optional(true))
	if err != nil {
		return
	}
	for sit.Next() {
		sel := sit.Selector()
		name := fieldName(sel)
		if sel.ConstraintType() == cue.RequiredConstraint && !present[name] {
			l.c.add(l.posOf(p), p.field(name), fmt.Sprintf("missing required field %q", name)+requiredHint(p))
		}
	}
}

// requiredHint adds, for the five top-level keys, that the original needs
// every one of them.
func requiredHint(p path) string {
	if len(p) == 0 {
		return " (the settings need all five: ports, exclude, broker, address, dev)"
	}
	return ""
}

// lookupField finds name in a schema struct whether it is a regular,
// optional or required field.
func lookupField(s cue.Value, name string) (cue.Value, bool) {
	for _, sel := range []cue.Selector{cue.Str(name), cue.Str(name).Optional(), cue.Str(name).Required()} {
		if v := s.LookupPath(cue.MakePath(sel)); v.Exists() {
			return v, true
		}
	}
	return cue.Value{}, false
}

func fieldName(sel cue.Selector) string {
	if sel.LabelType() == cue.StringLabel {
		return sel.Unquoted()
	}
	return strings.TrimRight(sel.String(), "?!")
}

func (l *loader) unknownField(s cue.Value, p path, name string) {
	pos := l.labels[p.String()]
	if !pos.IsValid() {
		pos = l.posOf(p)
	}
	var known []string
	if it, err := s.Fields(cue.Optional(true)); err == nil {
		for it.Next() {
			known = append(known, fieldName(it.Selector()))
		}
	}
	msg := fmt.Sprintf("unknown field %q", name)
	if best := nearest(name, known); best != "" {
		msg += fmt.Sprintf("; did you mean %q?", best)
	} else if len(known) > 0 {
		msg += "; the fields allowed here are " + strings.Join(known, ", ")
	}
	l.c.add(pos, p, msg)
}

// nearest returns the known name closest to a typo, or "" when none is
// close enough to be a plausible intent.
func nearest(name string, known []string) string {
	best, bestD := "", 1<<30
	for _, k := range known {
		d := levenshtein.Distance(strings.ToLower(name), strings.ToLower(k), nil)
		if d < bestD {
			best, bestD = k, d
		}
	}
	limit := 2
	if len(name) >= 9 {
		limit = 3
	}
	if bestD <= limit && bestD < len(name) {
		return best
	}
	return ""
}

// leaf checks one value the user gave against its part of the schema.
func (l *loader) leaf(u, s cue.Value, p path) {
	v := s.Unify(u)
	if err := v.Validate(cue.Concrete(true)); err != nil {
		l.leafErrors(err, u, s, p)
		return
	}
	l.valueCheck(v, p)
}

var numericBound = regexp.MustCompile(`^(>=|<=|>|<|!=)\s*(-?[0-9.]+)$`)

var boundWords = map[string]string{">=": "at least", "<=": "at most", ">": "more than", "<": "less than", "!=": "other than"}

// leafErrors turns CUE's errors for one value into one plain sentence. CUE
// reports a failed disjunction (an enum, or a default beside a type) as
// one conflict per alternative; those are read together.
func (l *loader) leafErrors(err error, u, s cue.Value, p path) {
	pos := token.NoPos
	userText := strings.TrimSpace(fmt.Sprint(u))
	var (
		conflicts []string // the schema's alternatives the value did not match
		specific  []string // messages that say more than "not this alternative"
	)
	for _, e := range cueerrors.Errors(err) {
		if up := userPos(l.c.file, e); up.IsValid() && !pos.IsValid() {
			pos = up
		}
		format, args := e.Msg()
		switch {
		case format == "%d errors in empty disjunction:", format == "field is required but not present":
		case strings.HasPrefix(format, "conflicting values %s and %s (mismatched types"):
			specific = append(specific, fmt.Sprintf("must be %s, not %s", kindName(s.IncompleteKind()), kindName(u.IncompleteKind())))
		case format == "conflicting values %s and %s" && len(args) == 2:
			a, b := strings.TrimSpace(fmt.Sprint(args[0])), strings.TrimSpace(fmt.Sprint(args[1]))
			if a == userText {
				a = b
			}
			conflicts = append(conflicts, a)
		case format == "invalid value %s (does not satisfy %s)" && len(args) >= 2:
			specific = append(specific, fmt.Sprintf("%s %s", userText, validatorText(fmt.Sprint(args[1]))))
		case strings.HasPrefix(format, "invalid value %v (out of bound %s)") && len(args) >= 2:
			specific = append(specific, l.boundText(userText, strings.TrimSpace(fmt.Sprint(args[1]))))
		case strings.HasPrefix(format, "incomplete value"), strings.HasPrefix(format, "non-concrete value"):
			specific = append(specific, fmt.Sprintf("has no single value (%s); constraints are fine, but they must narrow the field to one value", userText))
		case strings.HasPrefix(format, "incompatible list lengths"):
			specific = append(specific, "the list has the wrong number of elements")
		default:
			specific = append(specific, plainCUE(format, args))
		}
	}
	if !pos.IsValid() {
		pos = l.posOf(p)
	}
	switch {
	case len(specific) > 0:
		for _, m := range specific {
			l.c.add(pos, p, m)
		}
	case len(conflicts) == 1:
		l.c.add(pos, p, fmt.Sprintf("must be %s, not %s", conflicts[0], userText))
	case len(conflicts) > 1:
		sort.Strings(conflicts)
		l.c.add(pos, p, fmt.Sprintf("must be one of %s, not %s", strings.Join(conflicts, ", "), userText))
	default:
		l.c.add(pos, p, "invalid value: "+err.Error())
	}
}

// boundText explains a failed bound: a number limit or a pattern.
func (l *loader) boundText(value, bound string) string {
	if strings.HasPrefix(bound, "=~") {
		if text, ok := l.patterns[bound]; ok {
			return value + " " + text
		}
		return fmt.Sprintf("%s does not match the pattern %s", value, strings.TrimPrefix(bound, "=~"))
	}
	if m := numericBound.FindStringSubmatch(bound); m != nil {
		return fmt.Sprintf("%s is out of range: must be %s %s", value, boundWords[m[1]], m[2])
	}
	return fmt.Sprintf("%s is out of range (%s)", value, bound)
}

// patternTexts maps the schema's patterns, as CUE prints them in errors, to
// what they mean.
func patternTexts(sch cue.Value) map[string]string {
	m := map[string]string{}
	for def, text := range patternText {
		v := sch.LookupPath(cue.MakePath(cue.Def(def)))
		m[strings.TrimSpace(fmt.Sprint(v))] = text
	}
	return m
}

var patternText = map[string]string{
	"Range":  `is not a port or port range: write "N" or "A-B", e.g. "6000" or "6000-6050"`,
	"Label":  "is not a valid host name: letters, digits and hyphens, not starting or ending with a hyphen, at most 63 characters",
	"IfName": "is not a valid interface name (1 to 15 characters, no '/', ':' or spaces)",
}

func validatorText(name string) string {
	switch strings.TrimSpace(name) {
	case "net.IPCIDR":
		return `is not an address with a prefix length, e.g. "192.168.1.10/24" or "fd00::10/64"`
	case "net.IP":
		return "is not an IP address"
	case "net.IPv4":
		return "is not an IPv4 address"
	case "net.IPv6":
		return "is not an IPv6 address"
	case "time.Duration":
		return `is not a duration such as "10s", "500ms" or "1m30s"`
	}
	return "does not satisfy " + name
}

// plainCUE words a CUE error that has no special translation.
func plainCUE(format string, args []interface{}) string {
	switch format {
	case "field not allowed":
		return "unknown field"
	case "field is required but not present":
		return "missing required field"
	case "invalid value %v (out of bound %s)":
		if len(args) == 2 {
			if m := numericBound.FindStringSubmatch(fmt.Sprint(args[1])); m != nil {
				return fmt.Sprintf("%v is out of range: must be %s %s", args[0], boundWords[m[1]], m[2])
			}
		}
	}
	return fmt.Sprintf(format, args...)
}

// posOf finds where a path is in the user's file: its value, else its
// name, else the nearest enclosing thing that has a position.
func (l *loader) posOf(p path) token.Pos {
	for ; ; p = p[:len(p)-1] {
		if pos := l.values[p.String()]; pos.IsValid() {
			return pos
		}
		if pos := l.user.LookupPath(cuePathOf(p)).Pos(); pos.IsValid() {
			return pos
		}
		if pos := l.labels[p.String()]; pos.IsValid() {
			return pos
		}
		if len(p) == 0 {
			return token.NoPos
		}
	}
}

func cuePathOf(p path) cue.Path {
	sels := make([]cue.Selector, len(p))
	for i, e := range p {
		if e.isIdx {
			sels[i] = cue.Index(e.index)
		} else {
			sels[i] = cue.Str(e.name)
		}
	}
	return cue.MakePath(sels...)
}

// collectLabels records where each field name is written, so that an
// unknown field is reported at its name rather than at its value.
func (l *loader) collectLabels(n ast.Node, p path) {
	switch n := n.(type) {
	case *ast.File:
		l.collectDecls(n.Decls, p)
	case *ast.StructLit:
		l.collectDecls(n.Elts, p)
	case *ast.ListLit:
		for i, e := range n.Elts {
			if pos := e.Pos(); pos.IsValid() {
				l.values[p.idx(i).String()] = pos
			}
			l.collectLabels(e, p.idx(i))
		}
	}
}

func (l *loader) collectDecls(decls []ast.Decl, p path) {
	for _, d := range decls {
		f, ok := d.(*ast.Field)
		if !ok {
			continue
		}
		name, _, err := ast.LabelName(f.Label)
		if err != nil {
			continue
		}
		fp := p.field(name)
		if _, seen := l.labels[fp.String()]; !seen {
			pos := f.Label.Pos()
			if _, ident := f.Label.(*ast.Ident); ident && l.jsonLabels {
				pos = pos.Add(-1)
			}
			l.labels[fp.String()] = pos
			if vp := f.Value.Pos(); vp.IsValid() {
				l.values[fp.String()] = vp
			}
		}
		l.collectLabels(f.Value, fp)
	}
}

// pattern is a path with list indexes wildcarded, for rules that apply to
// every element.
func (p path) pattern() string {
	var b strings.Builder
	for i, e := range p {
		if e.isIdx {
			b.WriteString("[*]")
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(e.name)
	}
	return b.String()
}

// valueCheck applies the rules CUE cannot state simply, to one value that
// passed the schema.
func (l *loader) valueCheck(v cue.Value, p path) {
	s, err := v.String()
	if err != nil {
		return
	}
	pos := l.posOf(p)
	switch p.pattern() {
	case "ports[*]", "exclude[*]", "firewall.forward[*].ports":
		if _, _, err := ParseRange(s); err != nil {
			l.c.add(pos, p, err.Error())
		}
	case "address", "ntp.servers[*]":
		if !validHost(s) {
			l.c.add(pos, p, fmt.Sprintf("%q is not a host name or IP address", s))
		}
	case "tls.names[*]":
		if !validHost(strings.TrimPrefix(s, "*.")) || isIP(s) {
			l.c.add(pos, p, fmt.Sprintf("%q is not a DNS name (put IP addresses in tls.ips)", s))
		}
	case "relay.public_wait", "relay.write_timeout", "relay.log_interval", "api.read_timeout", "api.idle_timeout":
		if d, err := time.ParseDuration(s); err == nil && d <= 0 {
			l.c.add(pos, p, fmt.Sprintf("%s must be more than zero", s))
		}
	case "api.allow[*]":
		if _, err := ParseAllow(s); err != nil {
			l.c.add(pos, p, err.Error())
		}
	}
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

var labelRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// validHost accepts an IP address or a DNS name of RFC 1123 labels.
func validHost(s string) bool {
	if isIP(s) {
		return true
	}
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if !labelRE.MatchString(label) {
			return false
		}
	}
	return true
}

// partial decodes, one top-level field at a time, the fields the rules
// between fields need, and says which of them are valid.
func (l *loader) partial() (*Config, func(string) bool) {
	cfg := &Config{}
	valid := map[string]bool{}
	required := map[string]bool{}
	if it, err := l.def.Fields(cue.Optional(true)); err == nil {
		for it.Next() {
			if it.Selector().ConstraintType() == cue.RequiredConstraint {
				required[fieldName(it.Selector())] = true
			}
		}
	}
	for _, name := range []string{"ports", "exclude", "broker", "dev", "api", "network", "firewall"} {
		s, _ := lookupField(l.def, name)
		v := s
		if u := l.user.LookupPath(cue.MakePath(cue.Str(name))); u.Exists() {
			v = s.Unify(u)
		} else if required[name] {
			continue // missing, and reported as such
		}
		if v.Validate(cue.Concrete(true)) != nil {
			continue
		}
		b, err := v.MarshalJSON()
		if err != nil {
			continue
		}
		wrapped, err := json.Marshal(map[string]json.RawMessage{name: b})
		if err != nil || json.Unmarshal(wrapped, cfg) != nil {
			continue
		}
		valid[name] = true
	}
	return cfg, func(name string) bool { return valid[name] }
}

// crossChecks are the rules between fields, applied to the fields that
// valid says are fine on their own.
func (l *loader) crossChecks(cfg *Config, valid func(field string) bool) {
	l.portChecks(cfg, valid)
	if valid("network") {
		l.networkChecks(cfg)
	}
	if valid("firewall") {
		l.forwardChecks(cfg)
	}
	if valid("api") && cfg.API.Allow != nil && len(cfg.API.Allow) == 0 {
		p := path{}.field("api").field("allow")
		l.c.add(l.posOf(p), p, "the list is empty, so only this host could use the API: "+
			"list the Controller's address, or leave allow out to let everyone in")
	}
}

func (l *loader) portChecks(cfg *Config, valid func(string) bool) {
	if !valid("ports") {
		return
	}
	type rng struct {
		lo, hi uint16
		i      int
	}
	ports := path{}.field("ports")
	var rs []rng
	var pool, excluded bitset
	for i, s := range cfg.Ports {
		lo, hi, err := ParseRange(s)
		if err != nil {
			return // reported already
		}
		rs = append(rs, rng{lo, hi, i})
		pool.setRange(lo, hi)
	}
	for _, s := range cfg.Exclude {
		lo, hi, err := ParseRange(s)
		if err != nil {
			return
		}
		excluded.setRange(lo, hi)
	}
	// Overlaps need only ports; the rest needs the whole pool.
	sorted := append([]rng(nil), rs...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].lo < sorted[j].lo })
	for k := 1; k < len(sorted); k++ {
		prev, cur := sorted[k-1], sorted[k]
		if cur.lo <= prev.hi {
			first, second := prev, cur
			if first.i > second.i {
				first, second = second, first
			}
			l.c.add(l.posOf(ports.idx(second.i)), ports.idx(second.i), fmt.Sprintf(
				"%q overlaps %q (ports[%d]); ranges in ports must not overlap: merge them or remove one",
				cfg.Ports[second.i], cfg.Ports[first.i], first.i))
		}
		if cur.hi < prev.hi {
			sorted[k].hi = prev.hi // keep the widest end for the next comparison
		}
	}
	if !valid("exclude") {
		return
	}
	usable := pool.andNot(&excluded)
	rangeOf := func(port int) int {
		for _, r := range rs {
			if port >= int(r.lo) && port <= int(r.hi) {
				return r.i
			}
		}
		return -1
	}
	if n := usable.count(); n < 2 {
		l.c.add(l.posOf(ports), ports, fmt.Sprintf(
			"ports minus exclude leaves %d usable port(s), and each mapping takes 2: widen ports or exclude fewer", n))
	}
	if valid("broker") && usable.has(cfg.Broker) {
		i := rangeOf(cfg.Broker)
		l.c.add(l.posOf(ports.idx(i)), ports.idx(i), fmt.Sprintf(
			"the pool includes port %d, the broker port; add \"%d\" to exclude, move the range, or change broker", cfg.Broker, cfg.Broker))
	}
	api := cfg.API.Port(cfg.Dev)
	if valid("dev") && valid("api") && usable.has(api) {
		which := "api.https_port, as dev is false"
		if cfg.Dev {
			which = "api.http_port, as dev is true"
		}
		i := rangeOf(api)
		l.c.add(l.posOf(ports.idx(i)), ports.idx(i), fmt.Sprintf(
			"the pool includes port %d, the API port (%s); add \"%d\" to exclude or move the range", api, which, api))
	}
}

func (l *loader) networkChecks(cfg *Config) {
	netw := path{}.field("network")
	names := map[string]int{}
	unnamed := -1
	for i, ifc := range cfg.Network {
		ip := netw.idx(i)
		switch {
		case ifc.Name == "" && unnamed >= 0:
			l.c.add(l.posOf(ip), ip, fmt.Sprintf("network[%d] also has no name; only one interface may mean \"the first Ethernet interface\": give each a name", unnamed))
		case ifc.Name == "":
			unnamed = i
		default:
			if j, dup := names[ifc.Name]; dup {
				l.c.add(l.posOf(ip.field("name")), ip.field("name"), fmt.Sprintf("interface %q is already configured in network[%d]; merge the two", ifc.Name, j))
			}
			names[ifc.Name] = i
		}
		if !ifc.DHCP && len(ifc.Addresses) == 0 && !ifc.AcceptRA {
			l.c.add(l.posOf(ip.field("dhcp")), ip.field("dhcp"), "with dhcp off, no addresses and accept_ra off the interface gets no address: add addresses or turn dhcp on")
		}
	}
}

func (l *loader) forwardChecks(cfg *Config) {
	fwd := path{}.field("firewall").field("forward")
	for i, f := range cfg.Firewall.Forward {
		lo, hi, err := ParseRange(f.Ports)
		if err != nil {
			continue
		}
		if f.ToPort != 0 && f.ToPort+int(hi-lo) > 65535 {
			fp := fwd.idx(i).field("to_port")
			l.c.add(l.posOf(fp), fp, fmt.Sprintf("%d plus the %d ports of %q runs past 65535", f.ToPort, int(hi-lo)+1, f.Ports))
		}
	}
}

// bitset is a set of the 65536 port numbers.
type bitset [1024]uint64

func (b *bitset) setRange(lo, hi uint16) {
	for p := int(lo); p <= int(hi); p++ {
		b[p>>6] |= 1 << (p & 63)
	}
}

func (b *bitset) has(p int) bool {
	return p >= 0 && p < 65536 && b[p>>6]&(1<<(p&63)) != 0
}

func (b *bitset) andNot(o *bitset) *bitset {
	var r bitset
	for i := range b {
		r[i] = b[i] &^ o[i]
	}
	return &r
}

func (b *bitset) count() int {
	n := 0
	for _, w := range b {
		for ; w != 0; w &= w - 1 {
			n++
		}
	}
	return n
}

// ParseRange parses the "N" or "A-B" port syntax of ports and exclude:
// decimal ports 1 to 65535, A <= B, no spaces.
func ParseRange(s string) (lo, hi uint16, err error) {
	a, b, isRange := strings.Cut(s, "-")
	if lo, err = parsePort(s, a); err != nil {
		return 0, 0, err
	}
	if !isRange {
		return lo, lo, nil
	}
	if hi, err = parsePort(s, b); err != nil {
		return 0, 0, err
	}
	if lo > hi {
		return 0, 0, fmt.Errorf("%q runs backwards: write the lower port first (\"%d-%d\")", s, hi, lo)
	}
	return lo, hi, nil
}

func parsePort(whole, s string) (uint16, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a port or port range: write \"N\" or \"A-B\", e.g. \"6000\" or \"6000-6050\"", whole)
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %s in %q is out of range: ports are 1 to 65535", s, whole)
	}
	return uint16(n), nil
}
