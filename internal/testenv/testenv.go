// Package testenv holds the one rule for tests that need root or QEMU: they
// run whenever they can, fail saying what is missing when they cannot, and
// skip only when an environment variable says so.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// The variables that turn a missing requirement from a failure into a skip.
const (
	SkipPrivileged = "IOFOG_SKIP_PRIVILEGED"
	SkipQEMU       = "IOFOG_SKIP_QEMU"
)

// Missing ends t because a requirement is missing: a skip naming msg when
// skipVar is "1", otherwise a failure that says how to skip on purpose.
func Missing(t testing.TB, skipVar, msg string) {
	t.Helper()
	if os.Getenv(skipVar) == "1" {
		t.Skipf("skipped (%s=1): %s", skipVar, msg)
	}
	t.Fatalf("%s (or set %s=1 to skip)", msg, skipVar)
}

// RequireRoot ends t unless it runs as root; why says what needs root.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, SkipPrivileged, "needs root: "+why)
	}
}

// RequireQEMU skips t when SkipQEMU is "1" (boot tests are slow, and a
// user may ask to leave them out even where QEMU exists); otherwise it
// returns what ready returns (the kernel cache directory), failing t with
// ready's error when QEMU or the cache is missing.
func RequireQEMU(t testing.TB, ready func() (string, error)) string {
	t.Helper()
	if os.Getenv(SkipQEMU) == "1" {
		t.Skipf("QEMU boot test skipped (%s=1)", SkipQEMU)
	}
	dir, err := ready()
	if err != nil {
		t.Fatalf("QEMU boot test: %v (or set %s=1 to skip)", err, SkipQEMU)
	}
	return dir
}

// SkipBrowser turns a missing Chromium into a skip for the tests that load
// pages in a real browser.
const SkipBrowser = "IOFOG_SKIP_BROWSER"

// RequireChromium returns the path of Debian's chromium, or ends t saying
// it is missing (a skip with SkipBrowser=1).
func RequireChromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	Missing(t, SkipBrowser, "needs a headless browser: Debian's chromium package (scripts/install-test-deps.sh installs it)")
	return ""
}
