package schema

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestAPIAllowAndTimeouts(t *testing.T) {
	// Defaults: everyone may use the API; the timeouts are set.
	cfg, err := LoadBytes("a.conf", []byte(j()))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.API.Allow) != 0 || cfg.API.ReadTimeout.Duration != 30*time.Second || cfg.API.IdleTimeout.Duration != 2*time.Minute {
		t.Errorf("defaults: %+v", cfg.API)
	}
	for _, src := range []struct{ file, text string }{
		{"a.conf", j(`"api": {"allow": ["192.0.2.10", "10.0.0.0/8", "fd00::/64"], "read_timeout": "5s", "idle_timeout": "1m"}`)},
		{"a.cue", c(`api: {allow: ["192.0.2.10", "10.0.0.0/8", "fd00::/64"], read_timeout: "5s", idle_timeout: "1m"}`)},
		{"a.hcl", h("api {\n  allow = [\"192.0.2.10\", \"10.0.0.0/8\", \"fd00::/64\"]\n  read_timeout = \"5s\"\n  idle_timeout = \"1m\"\n}")},
	} {
		cfg, err := LoadBytes(src.file, []byte(src.text))
		if err != nil {
			t.Errorf("%s: %v", src.file, err)
			continue
		}
		if !slices.Equal(cfg.API.Allow, []string{"192.0.2.10", "10.0.0.0/8", "fd00::/64"}) ||
			cfg.API.ReadTimeout.Duration != 5*time.Second || cfg.API.IdleTimeout.Duration != time.Minute {
			t.Errorf("%s: %+v", src.file, cfg.API)
		}
	}
	// Bad entries are named with their position; an empty list is refused
	// (it would lock out the Controller).
	for _, tc := range []struct{ text, want string }{
		{j(`"api": {"allow": ["10.0.0.0/33"]}`), `a.conf:7:21: api.allow[0]: "10.0.0.0/33" is not an IP address or a network`},
		{j(`"api": {"allow": ["controller.example.com"]}`), `api.allow[0]: "controller.example.com" is not an IP address`},
		{j(`"api": {"allow": []}`), "a.conf:7:20: api.allow: the list is empty"},
		{j(`"api": {"read_timeout": "0s"}`), "api.read_timeout: 0s must be more than zero"},
		{j(`"api": {"idle_timeout": "-1s"}`), "api.idle_timeout: -1s must be more than zero"},
	} {
		_, err := LoadBytes("a.conf", []byte(tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.text, err, tc.want)
		}
	}
}

func TestParseAllow(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.10":          "192.0.2.10/32",
		"10.1.2.3/8":          "10.0.0.0/8",
		"::ffff:192.0.2.10":   "192.0.2.10/32",
		"::ffff:10.0.0.0/104": "10.0.0.0/8",
		"fd00::1/64":          "fd00::/64",
		"0.0.0.0/0":           "0.0.0.0/0",
	} {
		got, err := ParseAllow(in)
		if err != nil || got != netip.MustParsePrefix(want) {
			t.Errorf("ParseAllow(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "fe80::1%eth0", "10.0.0.0/33", "host.example", "10.0.0.1-10.0.0.5"} {
		if _, err := ParseAllow(in); err == nil {
			t.Errorf("ParseAllow(%q) accepted", in)
		}
	}
}
