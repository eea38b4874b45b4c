package relay_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/agentclient"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key in
// the given PEM form, and returns the file paths and the certificate PEM.
func selfSigned(t *testing.T, keyForm string) (certFile, keyFile string, certPEM []byte) {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "connector.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	var pub, priv any
	var keyBlock *pem.Block
	switch keyForm {
	case "PKCS#1":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		pub, priv = &k.PublicKey, k
		keyBlock = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
	case "SEC1":
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pub, priv = &k.PublicKey, k
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		keyBlock = &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
	default: // PKCS#8
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pub, priv = &k.PublicKey, k
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		keyBlock = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	certFile, keyFile = filepath.Join(dir, "server-cert.pem"), filepath.Join(dir, "server-key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(keyBlock), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, certPEM
}

func TestTLSModeServesAPIAndDataPortsOverTLS(t *testing.T) {
	for _, form := range []string{"PKCS#8", "PKCS#1", "SEC1"} {
		t.Run(form, func(t *testing.T) {
			certFile, keyFile, certPEM := selfSigned(t, form)
			cfg := relaytest.Config(t, 4)
			cfg.Dev = false
			in := relaytest.Start(t, relay.Options{Config: cfg, CertFile: certFile, KeyFile: keyFile})
			roots := x509.NewCertPool()
			roots.AppendCertsFromPEM(certPEM)
			tc := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
			in.Client.Transport = &http.Transport{TLSClientConfig: tc}
			if !strings.HasPrefix(in.Base, "https://") {
				t.Fatalf("API base %s is not https", in.Base)
			}
			code, r := in.Post(t, "/api/v2/status", url.Values{"mappingid": {"all"}})
			if code != 200 || r["status"] != "running" {
				t.Fatalf("status over HTTPS: %d %v", code, r)
			}
			// Plain HTTP on the HTTPS port is not served (the 1.3.0 defect).
			plain := &http.Client{Timeout: hangGuard}
			if resp, err := plain.Post("http://"+in.APIAddr().String()+"/api/v2/status", "application/x-www-form-urlencoded",
				strings.NewReader("mappingid=all")); err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if strings.Contains(string(body), `"status":"running"`) {
					t.Error("the API answered plain HTTP in TLS mode")
				}
			}
			// TLS 1.1 is refused.
			old := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MaxVersion: tls.VersionTLS11}
			if c, err := tls.Dial("tcp", in.APIAddr().String(), old); err == nil {
				c.Close()
				t.Error("TLS 1.1 handshake accepted")
			}

			m := in.AddPublic(t, 60, 200000)
			// The Controller sends the agents the PEM body without its
			// BEGIN/END lines.
			body := strings.Join(strings.Split(strings.TrimSpace(string(certPEM)), "\n")[1:], "\n")
			body = body[:strings.LastIndex(body, "\n")]
			runAgents(t, m, 2, startHTTPService(t), func(c *agentclient.Config) {
				c.DevMode = false
				c.Cert = body
			})
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}, Timeout: hangGuard}
			resp, err := hc.Get("https://" + addr(m.Port2) + "/over-tls")
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(got) != "GET /over-tls " {
				t.Fatalf("public client over TLS got %q", got)
			}
			// A plain-TCP agent cannot authenticate on a TLS port.
			c := dial(t, m.Port1)
			io.WriteString(c, m.Passcode1)
			expectClosed(t, c, "plain agent on a TLS port")
		})
	}
}

func TestTLSFilesMissingOrBadAreFatalAndNamed(t *testing.T) {
	certFile, keyFile, _ := selfSigned(t, "PKCS#8")
	bad := filepath.Join(t.TempDir(), "server-key.pem")
	os.WriteFile(bad, []byte("not a key"), 0o600)
	missing := filepath.Join(t.TempDir(), "server-cert.pem")
	for name, files := range map[string][2]string{
		"missing cert": {missing, keyFile},
		"bad key":      {certFile, bad},
	} {
		cfg := relaytest.Config(t, 2)
		cfg.Dev = false
		_, err := relay.New(relay.Options{Config: cfg, StateDir: t.TempDir(), CertFile: files[0], KeyFile: files[1]})
		if err == nil {
			t.Errorf("%s: New succeeded", name)
			continue
		}
		named := files[0]
		if name == "bad key" {
			named = files[1]
		}
		if !strings.Contains(err.Error(), named) {
			t.Errorf("%s: error %q does not name %s", name, err, named)
		}
	}
}

// A public client that never finishes its TLS handshake must not take the
// only pooled agent connection from a client that does.
func TestPublicClientStuckInTLSHandshakeHoldsNoAgent(t *testing.T) {
	certFile, keyFile, certPEM := selfSigned(t, "PKCS#8")
	cfg := relaytest.Config(t, 4)
	cfg.Dev = false
	in := relaytest.Start(t, relay.Options{Config: cfg, CertFile: certFile, KeyFile: keyFile})
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	tc := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
	in.Client.Transport = &http.Transport{TLSClientConfig: tc}
	m := in.AddPublic(t, 1, 200000)

	agentRaw := dial(t, m.Port1)
	agent := tls.Client(agentRaw, tc)
	io.WriteString(agent, m.Passcode1)
	reply := make([]byte, 10)
	if _, err := io.ReadFull(agent, reply); err != nil || string(reply) != "AUTHORIZED" {
		t.Fatalf("agent got %q, %v; want AUTHORIZED", reply, err)
	}
	dial(t, m.Port2) // connects, never says hello
	// Give the Connector time to take up the silent client first; the
	// outcome is checked below, not the time.
	time.Sleep(200 * time.Millisecond)

	pub, err := tls.Dial("tcp", addr(m.Port2), tc)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	pub.SetDeadline(time.Now().Add(hangGuard))
	io.WriteString(pub, "hello")
	got := make([]byte, 5)
	if _, err := io.ReadFull(agent, got); err != nil || string(got) != "hello" {
		t.Fatalf("agent got %q, %v; want the second client's bytes", got, err)
	}
}
