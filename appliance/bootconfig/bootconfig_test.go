package bootconfig

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const (
	goodCUE  = "ports:   [\"7000-7010\"]\nexclude: []\nbroker:  12345\naddress: \"127.0.0.1\"\ndev:     true\n"
	goodHCL  = "ports   = [\"8000-8010\"]\nexclude = []\nbroker  = 12345\naddress = \"127.0.0.1\"\ndev     = true\n"
	goodJSON = `{"ports":["9000-9010"],"exclude":[],"broker":12345,"address":"127.0.0.1","dev":true}`
	// Line 1 names a port that does not exist; line 5 has a string for a bool.
	badCUE = "ports:   [\"6000-70000\"]\nexclude: []\nbroker:  12345\naddress: \"127.0.0.1\"\ndev:     \"yes\"\n"
)

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func dirs(t *testing.T) (boot, state string) {
	root := t.TempDir()
	return filepath.Join(root, "boot"), filepath.Join(root, "boot", "state")
}

func TestPrecedenceCUEThenHCLThenConf(t *testing.T) {
	boot, state := dirs(t)
	write(t, boot, "iofog-connector.conf", goodJSON)
	r := Load(boot, state)
	if r.File != "iofog-connector.conf" || r.Config.Ports[0] != "9000-9010" || len(r.Ignored) != 0 {
		t.Fatalf("only .conf: got file %q ports %v ignored %v", r.File, r.Config.Ports, r.Ignored)
	}
	write(t, boot, "connector.hcl", goodHCL)
	r = Load(boot, state)
	if r.File != "connector.hcl" || r.Config.Ports[0] != "8000-8010" || !slices.Equal(r.Ignored, []string{"iofog-connector.conf"}) {
		t.Fatalf("hcl + conf: got file %q ports %v ignored %v", r.File, r.Config.Ports, r.Ignored)
	}
	write(t, boot, "connector.cue", goodCUE)
	r = Load(boot, state)
	if r.File != "connector.cue" || r.Source != FromFile || r.Config.Ports[0] != "7000-7010" ||
		!slices.Equal(r.Ignored, []string{"connector.hcl", "iofog-connector.conf"}) {
		t.Fatalf("all three: got file %q source %v ports %v ignored %v", r.File, r.Source, r.Config.Ports, r.Ignored)
	}
	// The Pi firmware's config.txt is never taken for ours.
	boot2, state2 := dirs(t)
	write(t, boot2, "config.txt", "arm_64bit=1\n")
	if r := Load(boot2, state2); r.File != "" || r.Source != FromDefault {
		t.Fatalf("config.txt only: file %q source %v, want the default", r.File, r.Source)
	}
}

func TestFirstBootWithBadConfigRunsDefaultAndListsEveryError(t *testing.T) {
	boot, state := dirs(t)
	write(t, boot, "connector.cue", badCUE)
	r := Load(boot, state)
	if r.Source != FromDefault || r.Valid() {
		t.Fatalf("source %v, want the built-in default", r.Source)
	}
	if r.Config.Ports[0] != "6000-6050" {
		t.Fatalf("default ports %v", r.Config.Ports)
	}
	if len(r.Errors) != 2 || !strings.HasPrefix(r.Errors[0], "connector.cue:1:") || !strings.HasPrefix(r.Errors[1], "connector.cue:5:") {
		t.Fatalf("errors = %q, want two, at lines 1 and 5 of connector.cue", r.Errors)
	}
	if _, err := os.Stat(filepath.Join(state, "last-good.cue")); err == nil {
		t.Fatal("an invalid config was saved as last good")
	}
}

func TestBadConfigFallsBackToLastGood(t *testing.T) {
	boot, state := dirs(t)
	write(t, boot, "connector.hcl", goodHCL)
	if r := Load(boot, state); r.Source != FromFile {
		t.Fatalf("good hcl: source %v", r.Source)
	}
	if b, err := os.ReadFile(filepath.Join(state, "last-good.hcl")); err != nil || string(b) != goodHCL {
		t.Fatalf("last good copy = %q, %v", b, err)
	}

	// The user switches to CUE and makes a mistake: the HCL still runs.
	write(t, boot, "connector.cue", badCUE)
	r := Load(boot, state)
	if r.Source != FromLastGood || r.File != "connector.cue" || r.Config.Ports[0] != "8000-8010" {
		t.Fatalf("bad cue: source %v file %q ports %v; want last good (8000-8010)", r.Source, r.File, r.Config.Ports)
	}
	if r.Path != filepath.Join(state, "last-good.hcl") || len(r.Errors) != 2 {
		t.Fatalf("path %q errors %q", r.Path, r.Errors)
	}

	// Fixed: the CUE file becomes the last good one, and the HCL copy goes.
	write(t, boot, "connector.cue", goodCUE)
	if r := Load(boot, state); r.Source != FromFile || r.Config.Ports[0] != "7000-7010" {
		t.Fatalf("fixed cue: source %v ports %v", r.Source, r.Config.Ports)
	}
	if _, err := os.Stat(filepath.Join(state, "last-good.hcl")); err == nil {
		t.Fatal("stale last-good.hcl kept beside last-good.cue")
	}
	if b, _ := os.ReadFile(filepath.Join(state, "last-good.cue")); string(b) != goodCUE {
		t.Fatalf("last-good.cue = %q", b)
	}
}

func TestDeletedConfigMeansDefault(t *testing.T) {
	boot, state := dirs(t)
	write(t, boot, "connector.cue", goodCUE)
	Load(boot, state)
	os.Remove(filepath.Join(boot, "connector.cue"))
	if r := Load(boot, state); r.Source != FromDefault || len(r.Errors) != 0 {
		t.Fatalf("no file: source %v errors %q, want the default and no errors", r.Source, r.Errors)
	}
}
