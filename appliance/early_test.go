package appliance

import (
	"maps"
	"strings"
	"testing"
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
