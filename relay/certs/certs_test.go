package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/internal/testpeer"
)

func parse(t *testing.T, certPEM, keyPEM []byte) (*x509.Certificate, any) {
	t.Helper()
	cb, rest := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" || len(strings.TrimSpace(string(rest))) != 0 {
		t.Fatalf("certificate PEM: want exactly one CERTIFICATE block, got %q", certPEM)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil || kb.Type != "PRIVATE KEY" {
		t.Fatalf("key PEM: want a PKCS#8 PRIVATE KEY block, got %q", keyPEM)
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatalf("key is not PKCS#8: %v", err)
	}
	return cert, key
}

func TestGenerateSANsAndKey(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	certPEM, keyPEM, err := Generate(Request{
		Names: []string{"Connector.Example.com", "203.0.113.7", "connector.example.com"},
		IPs:   []net.IP{net.ParseIP("192.0.2.1"), net.ParseIP("203.0.113.7"), net.ParseIP("2001:db8::1")},
		Days:  30,
		Now:   now,
	})
	if err != nil {
		t.Fatal(err)
	}
	cert, key := parse(t, certPEM, keyPEM)

	if got := strings.Join(cert.DNSNames, ","); got != "connector.example.com" {
		t.Errorf("DNS SANs = %q, want the domain once, lower case", got)
	}
	var ips []string
	for _, ip := range cert.IPAddresses {
		ips = append(ips, ip.String())
	}
	if got := strings.Join(ips, ","); got != "203.0.113.7,192.0.2.1,2001:db8::1" {
		t.Errorf("IP SANs = %q, want the IP-shaped name and every --ip once", got)
	}
	ek, ok := key.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		t.Fatalf("key is %T, want ECDSA P-256", key)
	}
	if !cert.NotBefore.Before(now) || !cert.NotAfter.Equal(now.AddDate(0, 0, 30)) {
		t.Errorf("validity %v .. %v, want from just before %v to 30 days after", cert.NotBefore, cert.NotAfter, now)
	}

	// The Controller and agents pin this certificate as their only root and
	// check the name they dialled.
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	for _, name := range []string{"connector.example.com", "203.0.113.7", "2001:db8::1"} {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, CurrentTime: now}); err != nil {
			t.Errorf("verify as %s with itself as root: %v", name, err)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: "other.example.com", Roots: roots, CurrentTime: now}); err == nil {
		t.Error("verify succeeded for a name not in the certificate")
	}
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: "connector.example.com", Roots: roots, CurrentTime: now.AddDate(0, 0, 31)}); err == nil {
		t.Error("verify succeeded after the certificate expired")
	}
}

func TestGenerateRSAAndDefaults(t *testing.T) {
	before := time.Now()
	certPEM, keyPEM, err := Generate(Request{Names: []string{"10.1.2.3"}, Key: RSA2048})
	if err != nil {
		t.Fatal(err)
	}
	cert, key := parse(t, certPEM, keyPEM)
	if k, ok := key.(*rsa.PrivateKey); !ok || k.N.BitLen() != 2048 {
		t.Fatalf("key is %T, want RSA 2048", key)
	}
	if len(cert.DNSNames) != 0 || len(cert.IPAddresses) != 1 || cert.IPAddresses[0].String() != "10.1.2.3" {
		t.Errorf("an IP domain must be an IP SAN only; got DNS %v IP %v", cert.DNSNames, cert.IPAddresses)
	}
	if want := before.AddDate(0, 0, DefaultDays); cert.NotAfter.Before(want.Add(-time.Minute)) {
		t.Errorf("NotAfter %v, want about %v (DefaultDays)", cert.NotAfter, want)
	}
}

func TestGenerateRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  Request
		want string
	}{
		{"no names", Request{}, "no names"},
		{"bad character", Request{Names: []string{"conn_ector.example"}}, `character '_'`},
		{"space", Request{Names: []string{"a b"}}, "not allowed"},
		{"empty label", Request{Names: []string{"a..b"}}, "label"},
		{"hyphen edge", Request{Names: []string{"-a.b"}}, "must not start or end"},
		{"negative days", Request{Names: []string{"a"}, Days: -1}, "days"},
		{"unknown key", Request{Names: []string{"a"}, Key: "dsa"}, "key type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Generate(tc.req)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestWritePairModesAndOverwrite(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM, err := Generate(Request{Names: []string{"connector.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := WritePair(dir, certPEM, keyPEM, false); err != nil {
		t.Fatal(err)
	}
	for file, mode := range map[string]fs.FileMode{KeyFile: 0o600, CertFile: 0o644} {
		st, err := os.Stat(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s mode %v, want %v", file, st.Mode().Perm(), mode)
		}
	}
	// What the daemon does with the files: load them as a pair.
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)); err != nil {
		t.Fatalf("written files do not load as a TLS pair: %v", err)
	}

	cert2, key2, err := Generate(Request{Names: []string{"other.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	err = WritePair(dir, cert2, key2, false)
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("overwrite without force: err = %v, want fs.ErrExist naming --force", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, CertFile)); string(got) != string(certPEM) {
		t.Fatal("refused overwrite still changed the certificate")
	}
	if got, _ := os.ReadFile(filepath.Join(dir, KeyFile)); string(got) != string(keyPEM) {
		t.Fatal("refused overwrite still changed the key")
	}

	// Only the key left behind: still refused, it may be the user's.
	if err := os.Remove(filepath.Join(dir, CertFile)); err != nil {
		t.Fatal(err)
	}
	if err := WritePair(dir, cert2, key2, false); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("a lone existing key must be kept; err = %v", err)
	}

	if err := WritePair(dir, cert2, key2, true); err != nil {
		t.Fatalf("overwrite with force: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, CertFile)); string(got) != string(cert2) {
		t.Fatal("forced overwrite did not replace the certificate")
	}

	if err := WritePair(dir, certPEM, key2, true); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("mismatched pair: err = %v, want a refusal", err)
	}
}

// TestServesTLSOnLoopback checks the pair end to end the way an agent uses
// it: a TLS server with the pair, a client trusting only that certificate and
// checking the name it dialled.
func TestServesTLSOnLoopback(t *testing.T) {
	certPEM, keyPEM, err := Generate(Request{Names: []string{"connector.example.com"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	testpeer.Serve(t, ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		testpeer.Echo(c)
	})
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(certPEM) {
		t.Fatal("certificate PEM not accepted as a root")
	}
	for _, serverName := range []string{"connector.example.com", "127.0.0.1"} {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(),
			&tls.Config{RootCAs: roots, ServerName: serverName})
		if err != nil {
			t.Fatalf("handshake as %s: %v", serverName, err)
		}
		c.Write([]byte("BEAT"))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "BEAT" {
			t.Errorf("echo through TLS as %s: %q, %v", serverName, buf, err)
		}
		c.Close()
	}
	_, err = tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(),
		&tls.Config{RootCAs: roots, ServerName: "wrong.example.com"})
	if err == nil {
		t.Error("handshake succeeded for a name the certificate does not carry")
	}
}

// FuzzCheckDNSName: whatever the user types as --domain, an accepted name
// must make a certificate that verifies for that name, and nothing panics.
func FuzzCheckDNSName(f *testing.F) {
	for _, s := range []string{"connector.example.com", "*.example.com", "a", "a..b", "-x", "x_y", "10.0.0.1", strings.Repeat("a", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if CheckDNSName(name) != nil || net.ParseIP(name) != nil || strings.HasPrefix(name, "*") {
			return
		}
		certPEM, keyPEM, err := Generate(Request{Names: []string{name}})
		if err != nil {
			t.Fatalf("accepted name %q: %v", name, err)
		}
		cert, _ := parse(t, certPEM, keyPEM)
		roots := x509.NewCertPool()
		roots.AddCert(cert)
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: strings.TrimSuffix(name, "."), Roots: roots}); err != nil {
			t.Fatalf("accepted name %q does not verify: %v", name, err)
		}
	})
}
