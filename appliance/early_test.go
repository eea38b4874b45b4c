package appliance

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/kmod"
)

func TestParseCmdline(t *testing.T) {
	c := ParseCmdline(`console=ttyS0,115200 panic=-1 iofog.boot=LABEL=MYBOOT quiet iofog.testhooks=1 x="a b"` + "\n")
	for k, want := range map[string]string{
		"console": "ttyS0,115200", "panic": "-1", "iofog.boot": "LABEL=MYBOOT", "quiet": "", "x": "a b",
	} {
		if got, ok := c[k]; !ok || got != want {
			t.Errorf("%s = %q (present %v), want %q", k, got, ok, want)
		}
	}
	if !c.Bool("iofog.testhooks") || !c.Bool("quiet") || c.Bool("panic") || c.Bool("missing") {
		t.Errorf("Bool: testhooks %v quiet %v panic %v missing %v", c.Bool("iofog.testhooks"), c.Bool("quiet"), c.Bool("panic"), c.Bool("missing"))
	}
}

func FuzzParseCmdline(f *testing.F) {
	f.Add(`console=ttyS0 iofog.boot="LABEL=A B" x`)
	f.Fuzz(func(t *testing.T, s string) {
		got := ParseCmdline(s)
		if strings.ContainsRune(s, '"') {
			return // quoting: checked by the table test
		}
		// Without quotes it is plain word splitting, the last word wins.
		want := Cmdline{}
		for _, w := range strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '\n' || r == '\t' }) {
			k, v, _ := strings.Cut(w, "=")
			want[k] = v
		}
		if !maps.Equal(got, want) {
			t.Fatalf("ParseCmdline(%q) = %v, want %v", s, got, want)
		}
	})
}

func TestCertTimeNeverBefore2025(t *testing.T) {
	unset := time.Unix(4, 0) // a Pi without RTC, four seconds after boot
	if got := certTime(unset); got.Year() != 2025 {
		t.Fatalf("certificate made with the clock at %v starts %v, want 2025", unset, got)
	}
	now := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	if got := certTime(now); !got.Equal(now) {
		t.Fatalf("a set clock is not used as is: %v", got)
	}
}

func TestIsDeviceDriver(t *testing.T) {
	for _, c := range []struct {
		m    kmod.Module
		want bool
	}{
		{kmod.Module{Name: "virtio_net", Aliases: []string{"virtio:d00000001v*"}}, true},
		{kmod.Module{Name: "bcm2835_wdt", Aliases: []string{"platform:bcm2835-wdt"}}, true},
		{kmod.Module{Name: "vfat", Aliases: []string{"fs-vfat"}}, false},
		{kmod.Module{Name: "nft_ct", Aliases: []string{"nft-expr-ct", "nft-expr-notrack"}}, false},
		{kmod.Module{Name: "tun", Aliases: []string{"devname:net/tun", "char-major-10-200"}}, false},
		{kmod.Module{Name: "nls_cp437"}, false},
	} {
		if got := isDeviceDriver(c.m); got != c.want {
			t.Errorf("isDeviceDriver(%s) = %v, want %v", c.m.Name, got, c.want)
		}
	}
}
