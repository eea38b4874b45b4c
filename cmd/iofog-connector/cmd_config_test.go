package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/eclipse-iofog/iofog-connector/schema"
)

func runConfigCmd(t *testing.T, f func(context.Context, *cliEnv, []string) int, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := f(context.Background(), &cliEnv{stdout: &out, stderr: &errb}, args)
	return code, out.String(), errb.String()
}

func writeConfigFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidateCommand(t *testing.T) {
	dir := t.TempDir()
	good := writeConfigFile(t, dir, "good.conf", schema.DefaultSettings)
	bad1 := writeConfigFile(t, dir, "bad.conf", `{"prots":["6000-6050"],"exclude":[],"broker":12345,"address":"127.0.0.1","dev":"yes"}`)
	bad2 := writeConfigFile(t, dir, "bad.hcl", "ports = [\"6000-6050\", \"6010\"]\nexclude = []\nbroker = 12345\naddress = \"127.0.0.1\"\ndev = true\n")

	code, out, _ := runConfigCmd(t, cmdValidate, good)
	if code != 0 || out != good+": valid\n" {
		t.Fatalf("valid file: exit %d, out %q", code, out)
	}
	code, out, errs := runConfigCmd(t, cmdValidate, good, bad1, bad2)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, want := range []string{
		bad1 + `:1:1: ports: missing required field "ports"`,
		bad1 + `:1:2: prots: unknown field "prots"; did you mean "ports"?`,
		bad1 + `:1:80: dev: must be true or false, not a string`,
		bad2 + `:1:23: ports[1]: "6010" overlaps "6000-6050" (ports[0])`,
	} {
		if !strings.Contains(errs, want+"") {
			t.Errorf("missing %q in:\n%s", want, errs)
		}
	}
	if out != good+": valid\n" {
		t.Errorf("stdout %q", out)
	}
	if code, _, _ := runConfigCmd(t, cmdValidate); code != 2 {
		t.Errorf("no files: exit %d, want 2", code)
	}
	if code, out, _ := runConfigCmd(t, cmdValidate, "-h"); code != 0 || !strings.Contains(out, "Usage: iofog-connector validate FILE...") {
		t.Errorf("-h: exit %d, out %q", code, out)
	}
	if code, _, _ := runConfigCmd(t, cmdValidate, filepath.Join(dir, "missing.conf")); code != 1 {
		t.Errorf("missing file: exit %d, want 1", code)
	}
}

func TestCompileCommand(t *testing.T) {
	dir := t.TempDir()
	src := writeConfigFile(t, dir, "connector.cue", "ports: [\"6000-6050\"]\nexclude: []\nbroker: 12345\naddress: \"127.0.0.1\"\ndev: false\nhostname: \"edge-1\"\n")

	code, out, errs := runConfigCmd(t, cmdCompile, src)
	if code != 0 || out != `{"ports":["6000-6050"],"exclude":[],"broker":12345,"address":"127.0.0.1","dev":false}`+"\n" {
		t.Fatalf("exit %d, out %q, err %q", code, out, errs)
	}

	dst := filepath.Join(dir, "iofog-connector.conf")
	appl := filepath.Join(dir, "appliance.json")
	code, out, errs = runConfigCmd(t, cmdCompile, src, "-o", dst, "--indent", "--appliance", appl)
	if code != 0 || out != "" {
		t.Fatalf("exit %d, out %q, err %q", code, out, errs)
	}
	b, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "{\n  \"ports\": [\n    \"6000-6050\"\n  ],") {
		t.Errorf("indented output:\n%s", b)
	}
	var a map[string]any
	ab, err := os.ReadFile(appl)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(ab, &a); err != nil || a["hostname"] != "edge-1" || a["ports"] != nil {
		t.Errorf("appliance output %s (%v)", ab, err)
	}

	bad := writeConfigFile(t, dir, "bad.conf", `{"ports":["6000"],"exclude":[],"broker":12345,"address":"127.0.0.1","dev":true}`)
	code, _, errs = runConfigCmd(t, cmdCompile, bad, "-o", filepath.Join(dir, "never.conf"))
	if code != 1 || !strings.Contains(errs, "leaves 1 usable port(s)") {
		t.Errorf("invalid config: exit %d, err %q", code, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "never.conf")); err == nil {
		t.Error("an invalid config was compiled to a file")
	}
	if code, _, _ := runConfigCmd(t, cmdCompile, src, src); code != 2 {
		t.Errorf("two files: exit %d, want 2", code)
	}
	if code, _, _ := runConfigCmd(t, cmdCompile, src, "--bogus"); code != 2 {
		t.Errorf("unknown flag: exit %d, want 2", code)
	}
}

func TestSchemaCommand(t *testing.T) {
	code, out, _ := runConfigCmd(t, cmdSchema)
	if code != 0 || out != schema.Source() || !strings.Contains(out, "#Connector: {") {
		t.Fatalf("exit %d, out starts %q", code, out[:min(len(out), 80)])
	}
	if code, _, _ := runConfigCmd(t, cmdSchema, "extra"); code != 2 {
		t.Errorf("extra argument: exit %d, want 2", code)
	}
}
