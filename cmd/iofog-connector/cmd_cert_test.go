package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCert(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := &cliEnv{stdout: &out, stderr: &errOut, version: "test", commit: "test"}
	code = cmdCert(context.Background(), env, args)
	return code, out.String(), errOut.String()
}

func TestCertCommandWritesPairAndPrintsRegistration(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := runCert(t, "--domain", "connector.example.com", "--ip", "203.0.113.7", "--ip", "10.0.0.2",
		"--out", dir, "--name", "edge-1", "--controller-cert", "/srv/certs/edge-1.pem")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "server-cert.pem"), filepath.Join(dir, "server-key.pem"))
	if err != nil {
		t.Fatalf("written files are not a TLS pair the daemon can load: %v", err)
	}
	if err := pair.Leaf.VerifyHostname("connector.example.com"); err != nil {
		t.Errorf("certificate does not name the domain: %v", err)
	}
	for _, ip := range []string{"203.0.113.7", "10.0.0.2"} {
		if err := pair.Leaf.VerifyHostname(ip); err != nil {
			t.Errorf("certificate does not name --ip %s: %v", ip, err)
		}
	}
	want := "iofog-controller connector add -n edge-1 -d connector.example.com -i 203.0.113.7 -c /srv/certs/edge-1.pem -S -h\n"
	if !strings.Contains(out, want) {
		t.Errorf("output lacks the registration command %q:\n%s", want, out)
	}

	// A second run must not replace the pinned certificate.
	before, _ := os.ReadFile(filepath.Join(dir, "server-cert.pem"))
	code, _, errOut = runCert(t, "--domain", "other.example.com", "--out", dir)
	if code == 0 || !strings.Contains(errOut, "--force") {
		t.Fatalf("overwrite without --force: exit %d, stderr %q; want a refusal naming --force", code, errOut)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "server-cert.pem")); !bytes.Equal(before, after) {
		t.Fatal("refused run changed the certificate")
	}
	code, _, errOut = runCert(t, "--domain", "other.example.com", "--out", dir, "--force")
	if code != 0 {
		t.Fatalf("--force: exit %d: %s", code, errOut)
	}
	pair, err = tls.LoadX509KeyPair(filepath.Join(dir, "server-cert.pem"), filepath.Join(dir, "server-key.pem"))
	if err != nil || pair.Leaf.VerifyHostname("other.example.com") != nil {
		t.Fatalf("--force did not write a new pair for the new domain: %v", err)
	}
}

func TestCertCommandIPDomain(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := runCert(t, "--domain", "192.0.2.10", "--out", dir, "--name", "n")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "IP:192.0.2.10") || strings.Contains(out, "DNS:") {
		t.Errorf("an IP domain must become an IP SAN only:\n%s", out)
	}
	if !strings.Contains(out, "connector add -n n -d 192.0.2.10 -i 192.0.2.10 -c ") {
		t.Errorf("public IP should default to the IP domain:\n%s", out)
	}
}

func TestCertCommandBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "--domain is required"},
		{[]string{"--domain", "a_b.example"}, 1, "not allowed"},
		{[]string{"--domain", "a.example", "--ip", "nope"}, 2, `"nope" is not an IP address`},
		{[]string{"--domain", "a.example", "--days", "-5"}, 1, "days"},
		{[]string{"--domain", "a.example", "--key", "dsa"}, 1, "key type"},
		{[]string{"--domain", "a.example", "--out", "/dev/null/dir"}, 1, "/dev/null/dir"},
		{[]string{"--domain", "0.0.0.0."}, 1, "not an address"},
	} {
		code, _, errOut := runCert(t, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("cert %q: exit %d, stderr %q; want exit %d mentioning %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
}

// --domain with the root's trailing dot: an address stays an address.
func TestCertCommandAddressWithTrailingDot(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := runCert(t, "--domain", "203.0.113.7.", "--out", dir, "--name", "n")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "IP:203.0.113.7") || strings.Contains(out, "DNS:") {
		t.Errorf("want an IP SAN only:\n%s", out)
	}
	if !strings.Contains(out, "connector add -n n -d 203.0.113.7 -i 203.0.113.7 -c ") {
		t.Errorf("the registration command should name the address without the dot:\n%s", out)
	}
}

// --out creates its directory, and the printed steps name it: the daemon
// must be pointed at it, or the files copied to where it looks.
func TestCertCommandOutDirectory(t *testing.T) {
	base := t.TempDir()
	t.Chdir(base)
	code, out, errOut := runCert(t, "--domain", "edge.example.com", "--out", "new/tls", "--name", "n")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	dir := filepath.Join(base, "new", "tls")
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, "server-cert.pem"), filepath.Join(dir, "server-key.pem")); err != nil {
		t.Fatalf("pair not written into the new directory: %v", err)
	}
	if !strings.Contains(out, "Wrote "+filepath.Join(dir, "server-cert.pem")) || !strings.Contains(out, "--tls-dir "+dir) {
		t.Errorf("the printed steps do not name %s and how the daemon finds it:\n%s", dir, out)
	}
	if !strings.Contains(out, "not from "+dir) {
		t.Errorf("the steps do not say that the daemon does not look in %s by itself:\n%s", dir, out)
	}
}
