package schema

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// j builds a JSON settings file: the original's default, one key per line
// (ports on line 2 ... dev on line 6), then each extra key on its own line
// from line 7, starting at column 3.
func j(extra ...string) string {
	s := "{\n  \"ports\": [\"6000-6050\"],\n  \"exclude\": [],\n  \"broker\": 12345,\n  \"address\": \"127.0.0.1\",\n  \"dev\": true"
	for _, e := range extra {
		s += ",\n  " + e
	}
	return s + "\n}\n"
}

// jset is j with one of the five keys replaced (same line layout).
func jset(key, value string, extra ...string) string {
	s := j(extra...)
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "  \""+key+"\":") {
			comma := ""
			if strings.HasSuffix(l, ",") {
				comma = ","
			}
			lines[i] = "  \"" + key + "\": " + value + comma
		}
	}
	return strings.Join(lines, "\n")
}

// c builds a CUE config: the five keys on lines 1-5, extras from line 6.
func c(extra ...string) string {
	s := "ports:   [\"6000-6050\"]\nexclude: []\nbroker:  12345\naddress: \"127.0.0.1\"\ndev:     true\n"
	for _, e := range extra {
		s += e + "\n"
	}
	return s
}

// h builds an HCL config: the five keys on lines 1-5, extras from line 6.
func h(extra ...string) string {
	s := "ports   = [\"6000-6050\"]\nexclude = []\nbroker  = 12345\naddress = \"127.0.0.1\"\ndev     = true\n"
	for _, e := range extra {
		s += e + "\n"
	}
	return s
}

// want is one expected error: where, which field, and words the message
// must contain.
type want struct {
	line, col int
	path      string
	says      string
}

var loadCases = []struct {
	name string
	file string
	src  string
	errs []want // nil: valid
}{
	// JSON: files the original accepts.
	{"json default", "iofog-connector.conf", DefaultSettings, nil},
	{"json installer address", "a.conf", jset("address", `"0.0.0.0"`), nil},
	{"json several ranges and excludes", "a.json", rep(j(), `["6000-6050"]`, `["6000-6050", "7000", "7100-7200"]`, `"exclude": []`, `"exclude": ["6000", "7150-7160"]`), nil},
	{"json leading zeros as the original's integer parsing", "a.conf", jset("ports", `["06000-06050"]`), nil},
	{"json dev false, 443 outside the pool", "a.conf", jset("dev", "false"), nil},
	{"json broker inside ports but excluded", "a.conf", rep(j(), "12345", "6010", `"exclude": []`, `"exclude": ["6010"]`), nil},
	{"json API port moved out of the pool", "a.conf", jset("ports", `["8000-8100"]`, `"api": {"http_port": 9090}`), nil},
	{"json 443 in pool is fine in dev mode", "a.conf", jset("ports", `["400-500"]`), nil},

	// JSON: mistakes.
	{"json typo in a key", "a.conf", strings.Replace(DefaultSettings, `"ports"`, `"prots"`, 1), []want{
		{1, 1, "ports", `missing required field "ports"`},
		{1, 2, "prots", `unknown field "prots"; did you mean "ports"?`},
	}},
	{"json missing dev", "a.conf", `{"ports":["6000-6050"],"exclude":[],"broker":12345,"address":"127.0.0.1"}`, []want{
		{1, 1, "dev", `missing required field "dev"`},
	}},
	{"json broker as a string", "a.conf", jset("broker", `"12345"`), []want{{4, 13, "broker", "must be a whole number, not a string"}}},
	{"json broker zero", "a.conf", jset("broker", "0"), []want{{4, 13, "broker", "0 is out of range: must be at least 1"}}},
	{"json broker too big", "a.conf", jset("broker", "70000"), []want{{4, 13, "broker", "at most 65535"}}},
	{"json dev as a string", "a.conf", jset("dev", `"true"`), []want{{6, 10, "dev", "must be true or false, not a string"}}},
	{"json ports not a list", "a.conf", jset("ports", `"6000-6050"`), []want{{2, 12, "ports", "must be a list, not a string"}}},
	{"json exclude null", "a.conf", jset("exclude", "null"), []want{{3, 14, "exclude", "must be a list, not null"}}},
	{"json range backwards", "a.conf", jset("ports", `["6050-6000"]`), []want{{2, 13, "ports[0]", `runs backwards: write the lower port first ("6000-6050")`}}},
	{"json range past 65535", "a.conf", jset("ports", `["6000-70000"]`), []want{{2, 13, "ports[0]", "port 70000 in \"6000-70000\" is out of range"}}},
	{"json range with a letter", "a.conf", jset("ports", `["6000", "60a0"]`), []want{{2, 21, "ports[1]", `is not a port or port range`}}},
	{"json range with spaces", "a.conf", jset("exclude", `["6000 - 6001"]`), []want{{3, 15, "exclude[0]", `is not a port or port range`}}},
	{"json overlapping ranges", "a.conf", jset("ports", `["6000-6050", "6040-6100"]`), []want{{2, 26, "ports[1]", `"6040-6100" overlaps "6000-6050" (ports[0])`}}},
	{"json same range twice", "a.conf", jset("ports", `["6000-6050", "7000", "6000-6050"]`), []want{{2, 34, "ports[2]", `overlaps "6000-6050" (ports[0])`}}},
	{"json one usable port", "a.conf", rep(j(), `["6000-6050"]`, `["6000-6001"]`, `"exclude": []`, `"exclude": ["6001"]`), []want{{2, 12, "ports", "leaves 1 usable port(s), and each mapping takes 2"}}},
	{"json API port in the pool", "a.conf", jset("ports", `["6000-6050", "8000-8100"]`), []want{{2, 26, "ports[1]", "port 8080, the API port (api.http_port, as dev is true)"}}},
	{"json HTTPS port in the pool", "a.conf", rep(j(), `["6000-6050"]`, `["400-500"]`, `"dev": true`, `"dev": false`), []want{{2, 13, "ports[0]", "port 443, the API port (api.https_port, as dev is false)"}}},
	{"json broker in the pool", "a.conf", jset("broker", "6010"), []want{{2, 13, "ports[0]", "port 6010, the broker port"}}},
	{"json nested typo", "a.conf", j(`"log": {"lvel": "debug"}`), []want{{7, 11, "log.lvel", `unknown field "lvel"; did you mean "level"?`}}},
	{"json unknown key with no near name", "a.conf", j(`"zzzzzz": 1`), []want{{7, 3, "zzzzzz", "the fields allowed here are ports, exclude, broker"}}},
	{"json log level", "a.conf", j(`"log": {"level": "verbose"}`), []want{{7, 20, "log.level", `must be one of "debug", "error", "info", "warn", not "verbose"`}}},
	{"json tls mode", "a.conf", j(`"tls": {"mode": "self"}`), []want{{7, 19, "tls.mode", `must be one of "auto", "files", "generate", not "self"`}}},
	{"json static address without prefix", "a.conf", j(`"network": [{"name": "eth0", "addresses": ["192.168.1.10"]}]`), []want{{7, 46, "network[0].addresses[0]", "is not an address with a prefix length"}}},
	{"json IPv6 gateway in gateway", "a.conf", j(`"network": [{"addresses": ["fd00::10/64"], "gateway": "fd00::1"}]`), []want{{7, 57, "network[0].gateway", `"fd00::1" is not an IPv4 address`}}},
	{"json DNS server not an address", "a.conf", j(`"network": [{"dns": ["dns.example"]}]`), []want{{7, 24, "network[0].dns[0]", "is not an IP address"}}},
	{"json two interfaces with one name", "a.conf", j("\"network\": [{\"name\": \"eth0\"},\n    {\"name\": \"eth0\"}]"), []want{{8, 14, "network[1].name", `interface "eth0" is already configured in network[0]`}}},
	{"json hostname with underscore", "a.conf", j(`"hostname": "edge_1"`), []want{{7, 15, "hostname", "is not a valid host name"}}},
	{"json address not a host", "a.conf", jset("address", `"local host"`), []want{{5, 14, "address", `"local host" is not a host name or IP address`}}},
	{"json forward protocol", "a.conf", j(`"firewall": {"forward": [{"interface": "eth0", "protocol": "icmp", "ports": "80", "to": "10.0.0.2"}]}`), []want{{7, 62, "firewall.forward[0].protocol", `must be one of "tcp", "udp", not "icmp"`}}},
	{"json forward missing target", "a.conf", j(`"firewall": {"forward": [{"interface": "eth0", "ports": "80"}]}`), []want{{7, 28, "firewall.forward[0].to", `missing required field "to"`}}},
	{"json forward to an IPv6 host", "a.conf", j(`"firewall": {"forward": [{"interface": "eth0", "ports": "80", "to": "fd00::2"}]}`), []want{{7, 71, "firewall.forward[0].to", `"fd00::2" is not an IPv4 address`}}},
	{"json negative rate limit", "a.conf", j(`"firewall": {"rate_limit": -1}`), []want{{7, 30, "firewall.rate_limit", "-1 is out of range: must be at least 0"}}},
	{"json public wait negative", "a.conf", j(`"relay": {"public_wait": "-1s"}`), []want{{7, 28, "relay.public_wait", "must be more than zero"}}},
	{"json public wait not a duration", "a.conf", j(`"relay": {"public_wait": "10 s"}`), []want{{7, 28, "relay.public_wait", "is not a duration"}}},
	{"json several mistakes at once", "a.conf", jset("broker", `"x"`, `"log": {"level": "loud"}`, `"tls": {"mod": "auto"}`), []want{
		{4, 13, "broker", "must be a whole number"},
		{7, 20, "log.level", "must be one of"},
		{8, 11, "tls.mod", `did you mean "mode"?`},
	}},
	{"json rules between fields reported beside other mistakes", "a.conf", rep(j(`"log": {"level": "loud"}`), `["6000-6050"]`, `["6000-6050", "6040", "8080"]`), []want{
		{2, 26, "ports[1]", `"6040" overlaps "6000-6050"`},
		{2, 34, "ports[2]", "the API port"},
		{7, 20, "log.level", "must be one of"},
	}},
	{"json pool rules wait for a valid exclude", "a.conf", rep(j(), `["6000-6050"]`, `["6000-6001"]`, `"exclude": []`, `"exclude": ["6001", "x"]`), []want{
		{3, 23, "exclude[1]", "is not a port or port range"},
	}},
	{"json syntax error", "a.conf", "{\n  \"ports\": [\"6000-6050\"],\n}\n", []want{{3, 1, "", "invalid JSON"}}},
	{"json not an object", "a.conf", `["6000-6050"]`, []want{{1, 1, "", "must be a JSON object"}}},

	// CUE.
	{"cue plain", "connector.cue", c(), nil},
	{"cue with comments, defaults and constraints", "connector.cue", "// pool for mappings\nports: [...string] | *[\"6000-6050\"]\nexclude: [...string] | *[]\nbroker: int & >1024 | *12345\naddress: \"127.0.0.1\"\ndev: bool | *true\nlog: level: \"debug\"\n", nil},
	{"cue std import", "connector.cue", "import \"strings\"\n" + "ports: [strings.Join([\"6000\", \"6050\"], \"-\")]\nexclude: []\nbroker: 12345\naddress: \"127.0.0.1\"\ndev: true\n", nil},
	{"cue static interface", "connector.cue", c(`network: [{name: "eth0", addresses: ["192.168.1.10/24"], gateway: "192.168.1.1", dns: ["192.168.1.1"]}]`), nil},
	{"cue not concrete", "connector.cue", strings.Replace(c(), "dev:     true", "dev:     bool", 1), []want{{5, 10, "dev", "has no single value (bool)"}}},
	{"cue contradicts itself", "connector.cue", strings.Replace(c(), "12345", ">20000 & 12345", 1), []want{{3, 10, "broker", "12345 is out of range: must be more than 20000"}}},
	{"cue typo", "connector.cue", c(`log: lvl: "debug"`), []want{{6, 6, "log.lvl", `unknown field "lvl"; did you mean "level"?`}}},
	{"cue syntax error", "connector.cue", c(`log: {level: "debug"`), []want{{6, 22, "", "expected '}', found 'EOF'"}}},
	{"cue overlap", "connector.cue", strings.Replace(c(), `["6000-6050"]`, `["6000-6050", "6050"]`, 1), []want{{1, 24, "ports[1]", `overlaps "6000-6050"`}}},
	{"cue bad enum", "connector.cue", c(`tls: mode: "files"`, `log: level: "trace"`), []want{{7, 13, "log.level", "must be one of"}}},

	// HCL.
	{"hcl plain", "connector.hcl", h(), nil},
	{"hcl every block", "connector.hcl", h(
		`hostname = "edge-1"`,
		`network {`, `  name      = "eth0"`, `  addresses = ["192.168.1.10/24"]`, `  gateway   = "192.168.1.1"`, `  dns       = ["192.168.1.1"]`,
		`  route {`, `    to  = "10.8.0.0/16"`, `    via = "192.168.1.254"`, `  }`, `}`,
		`network {`, `  name = "eth1"`, `}`,
		`ntp { servers = ["pool.ntp.org"] }`,
		`tls {`, `  mode  = "generate"`, `  names = ["edge.example.com"]`, `  ips   = ["192.168.1.10"]`, `}`,
		`firewall {`, `  enabled = true`, `  forward {`, `    interface = "eth1"`, `    protocol = "udp"`, `    ports = "5000-5010"`, `    to = "10.0.0.2"`, `  }`, `}`,
		`api { listen = "0.0.0.0" }`, `log { level = "debug" }`, `relay { public_wait = "30s" }`), nil},
	{"hcl unknown attribute", "connector.hcl", h(`hostnme = "edge"`), []want{{6, 1, "hostnme", `did you mean "hostname"?`}}},
	{"hcl unknown block", "connector.hcl", h(`ntpd {`, `}`), []want{{6, 1, "ntpd", `did you mean "ntp"?`}}},
	{"hcl unknown attribute in a block", "connector.hcl", h(`api {`, `  htp_port = 8081`, `}`), []want{{7, 3, "api.htp_port", `did you mean "http_port"?`}}},
	{"hcl block twice", "connector.hcl", h(`log { level = "debug" }`, `log { file = true }`), []want{{7, 1, "log", `block "log" appears twice (first at line 6)`}}},
	{"hcl block label", "connector.hcl", h(`network "eth0" {`, `}`), []want{{6, 9, "network", `takes no label`}}},
	{"hcl variables", "connector.hcl", h(`hostname = var.name`), []want{{6, 12, "", "Variables not allowed"}}},
	{"hcl syntax error", "connector.hcl", h(`api {`), []want{{6, 5, "", "Unclosed configuration block"}}},
	{"hcl type mismatch", "connector.hcl", strings.Replace(h(), "12345", `"12345"`, 1), []want{{3, 11, "broker", "must be a whole number, not a string"}}},
	{"hcl bad CIDR in a block", "connector.hcl", h(`network {`, `  addresses = ["10.0.0.2/24", "10.0.0.3/33"]`, `}`), []want{{7, 31, "network[0].addresses[1]", "is not an address with a prefix length"}}},
	{"hcl broker in the pool", "connector.hcl", strings.Replace(h(), "12345", "6000", 1), []want{{1, 12, "ports[0]", "the broker port"}}},
	{"hcl forward missing interface", "connector.hcl", h(`firewall {`, `  forward {`, `    ports = "80"`, `    to = "10.0.0.2"`, `  }`, `}`), []want{{7, 3, "firewall.forward[0].interface", `missing required field "interface"`}}},
}

// rep replaces old/new pairs in s.
func rep(s string, oldnew ...string) string { return strings.NewReplacer(oldnew...).Replace(s) }

func TestLoadCases(t *testing.T) {
	if len(loadCases) < 40 {
		t.Fatalf("only %d cases", len(loadCases))
	}
	for _, tc := range loadCases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := LoadBytes(tc.file, []byte(tc.src))
			if tc.errs == nil {
				if err != nil {
					t.Fatalf("want valid, got:\n%v\nsource:\n%s", err, tc.src)
				}
				if cfg == nil {
					t.Fatal("no config and no error")
				}
				return
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("want Errors, got %T %v\nsource:\n%s", err, err, tc.src)
			}
			if len(es) != len(tc.errs) {
				t.Fatalf("want %d errors, got %d:\n%v\nsource:\n%s", len(tc.errs), len(es), err, tc.src)
			}
			for i, w := range tc.errs {
				e := es[i]
				if e.File != tc.file || e.Line != w.line || e.Column != w.col || e.Path != w.path || !strings.Contains(e.Msg, w.says) {
					t.Errorf("error %d:\n got %s\nwant %s:%d:%d: %s: ...%s...", i, e, tc.file, w.line, w.col, w.path, w.says)
				}
			}
		})
	}
}

func TestDefault(t *testing.T) {
	d := Default()
	got, err := CompileSettings(d, false)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != DefaultSettings+"\n" {
		t.Errorf("default compiles to %s, want the original's %s", got, DefaultSettings)
	}
	checks := []struct {
		what      string
		got, want any
	}{
		{"hostname", d.Hostname, ""},
		{"network", len(d.Network), 0},
		{"tls.mode", d.TLS.Mode, "auto"},
		{"api.http_port", d.API.HTTPPort, 8080},
		{"api.https_port", d.API.HTTPSPort, 443},
		{"api.listen", d.API.Listen, ""},
		{"log.level", d.Log.Level, "info"},
		{"log.max_size_kib", d.Log.MaxSize, 1024},
		{"relay.public_wait", d.Relay.PublicWait.Duration, 10 * time.Second},
		{"relay.write_timeout", d.Relay.WriteTimeout.Duration, 60 * time.Second},
		{"relay.max_connections", d.Relay.MaxConnections, 16384},
		{"relay.max_unauthenticated", d.Relay.MaxUnauthenticated, 256},
		{"relay.max_waiting", d.Relay.MaxWaiting, 256},
		{"relay.log_interval", d.Relay.LogInterval.Duration, 10 * time.Second},
		{"firewall.rate_limit", d.Firewall.RateLimit, 50},
		{"firewall.burst", d.Firewall.Burst, 200},
		{"firewall.enabled set", d.Firewall.Enabled != nil, false},
		{"firewall on for the appliance", d.Firewall.On(true), true},
		{"firewall off on a host", d.Firewall.On(false), false},
		{"API port in dev", d.API.Port(d.Dev), 8080},
	}
	for _, c := range checks {
		if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
}

func TestInterfaceDHCPDefault(t *testing.T) {
	cfg, err := LoadBytes("a.cue", []byte(c(`network: [{name: "eth0"}, {name: "eth1", addresses: ["10.0.0.2/24"]}, {name: "eth2", addresses: ["10.0.1.2/24"], dhcp: true}]`)))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, false, true} {
		if cfg.Network[i].DHCP != want {
			t.Errorf("network[%d].dhcp = %v, want %v", i, cfg.Network[i].DHCP, want)
		}
	}
}

func TestErrorFormat(t *testing.T) {
	_, err := LoadBytes("/boot/iofog-connector.conf", []byte(strings.Replace(DefaultSettings, `"dev"`, `"deb"`, 1)))
	want := "/boot/iofog-connector.conf:1:1: dev: missing required field \"dev\"" // then the unknown field
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("got %v, want it to start with %s", err, want)
	}
	if !strings.Contains(err.Error(), "\n/boot/iofog-connector.conf:1:74: deb: unknown field \"deb\"; did you mean \"dev\"?") {
		t.Errorf("second line missing or wrong in:\n%v", err)
	}
}

func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		in     string
		lo, hi uint16
		ok     bool
	}{
		{"6000", 6000, 6000, true}, {"6000-6050", 6000, 6050, true}, {"1-65535", 1, 65535, true},
		{"065535", 65535, 65535, true}, {"0", 0, 0, false}, {"65536", 0, 0, false}, {"6050-6000", 0, 0, false},
		{"", 0, 0, false}, {"-", 0, 0, false}, {"6000-", 0, 0, false}, {"-6000", 0, 0, false}, {" 6000", 0, 0, false},
		{"6000-6050-6060", 0, 0, false}, {"+6000", 0, 0, false}, {"99999999999999999999", 0, 0, false},
	} {
		lo, hi, err := ParseRange(tc.in)
		if (err == nil) != tc.ok || lo != tc.lo || hi != tc.hi {
			t.Errorf("ParseRange(%q) = %d, %d, %v; want %d, %d, ok=%v", tc.in, lo, hi, err, tc.lo, tc.hi, tc.ok)
		}
	}
}

func TestLoadFileByExtension(t *testing.T) {
	dir := t.TempDir()
	for name, src := range map[string]string{"x.conf": DefaultSettings, "x.json": DefaultSettings, "x.cue": c(), "x.hcl": h()} {
		p := dir + "/" + name
		if err := writeFile(p, src); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(p); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := Load(dir + "/missing.conf"); err == nil {
		t.Error("missing file loaded")
	}
}

func TestTooLarge(t *testing.T) {
	_, err := LoadBytes("big.conf", []byte(DefaultSettings+strings.Repeat(" ", MaxSize)))
	var es Errors
	if !errors.As(err, &es) || !strings.Contains(es[0].Msg, "at most") {
		t.Fatalf("got %v", err)
	}
}

func TestCompileRejectsHandBuiltMistakes(t *testing.T) {
	good := Default()
	for name, mutate := range map[string]func(*Config){
		"bad range":   func(c *Config) { c.Ports = []string{"6050-6000"} },
		"bad exclude": func(c *Config) { c.Exclude = []string{"x"} },
		"broker zero": func(c *Config) { c.Broker = 0 },
		"no address":  func(c *Config) { c.Address = "" },
	} {
		cfg := *good
		mutate(&cfg)
		if out, err := CompileSettings(&cfg, false); err == nil {
			t.Errorf("%s: compiled to %s", name, out)
		}
	}
	cfg := *good
	cfg.Exclude = nil
	out, err := CompileSettings(&cfg, false)
	if err != nil || !strings.Contains(string(out), `"exclude":[]`) {
		t.Errorf("nil exclude must be written as [] (the original needs the key): %s %v", out, err)
	}
}

func TestDeepNestingRefused(t *testing.T) {
	in := `{"ports":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`
	_, err := LoadBytes("deep.conf", []byte(in))
	var es Errors
	if !errors.As(err, &es) || es[0].Line != 1 || es[0].Column != 9+MaxDepth || !strings.Contains(es[0].Msg, "nest deeper") {
		t.Fatalf("got %v", err)
	}
	// Brackets inside strings are text, not nesting.
	if _, err := LoadBytes("a.cue", []byte(c(`hostname: "`+strings.Repeat("[", 100)+`"`))); err == nil || strings.Contains(err.Error(), "nest deeper") {
		t.Fatalf("got %v", err)
	}
}
