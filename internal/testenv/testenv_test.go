package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMissing runs Missing in a child test process, with and without the
// skip variable, and checks it fails or skips as documented.
func TestMissing(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") == "1" {
		Missing(t, "TESTENV_SKIP", "needs a flux capacitor")
		return
	}
	for _, c := range []struct {
		skip     string
		wantFail bool
		want     string
	}{
		{"", true, "needs a flux capacitor (or set TESTENV_SKIP=1 to skip)"},
		{"1", false, "skipped (TESTENV_SKIP=1): needs a flux capacitor"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMissing$", "-test.v")
		cmd.Env = append(os.Environ(), "TESTENV_CHILD=1", "TESTENV_SKIP="+c.skip)
		out, err := cmd.CombinedOutput()
		if (err != nil) != c.wantFail {
			t.Errorf("TESTENV_SKIP=%q: exit error %v, want failure %v\n%s", c.skip, err, c.wantFail, out)
		}
		if !strings.Contains(string(out), c.want) {
			t.Errorf("TESTENV_SKIP=%q: output lacks %q:\n%s", c.skip, c.want, out)
		}
	}
}
