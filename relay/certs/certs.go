// Package certs makes the self-signed TLS certificate and key that the
// Connector serves in non-dev mode (docs/protocol.md §2, §5): the Controller pins
// the certificate as its only trusted root for this Connector and hands its
// body to agents for the same purpose, so one self-signed certificate is both
// the server's leaf and the trust anchor.
//
// Keys come from crypto/rand, which on Linux is the getrandom(2) system call.
// It blocks only until the kernel's CRNG has been seeded once after boot;
// kernels from 5.4 on seed it from CPU timing jitter within about a second
// even with no hardware RNG, so an appliance can call Generate early in boot
// without stalling on "entropy". Nothing here reads /dev/random.
package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/eclipse-iofog/iofog-connector/atomicfile"
)

// File names the Connector reads in non-dev mode, in its TLS directory.
const (
	CertFile = "server-cert.pem"
	KeyFile  = "server-key.pem"
)

// DefaultDays is the validity when Request.Days is 0. The certificate is
// pinned by the Controller and by every agent, so replacing it means
// re-registering the Connector: a long life is the lesser evil.
const DefaultDays = 3650

// maxDays keeps NotAfter well inside what every X.509 parser accepts.
const maxDays = 100 * 365

// KeyType selects the key algorithm.
type KeyType string

const (
	// ECDSAP256 is the default: small, fast handshakes, accepted by the
	// Controller (Node.js) and the agents' network containers (Java).
	ECDSAP256 KeyType = "ecdsa-p256"
	// RSA2048 is for peers that cannot do ECDSA.
	RSA2048 KeyType = "rsa-2048"
)

// Request says what the certificate must name.
type Request struct {
	// Names are DNS names; an entry that parses as an IP address is put in
	// the IP SANs instead, so a Connector registered by address works.
	Names []string
	// IPs are extra IP address SANs.
	IPs []net.IP
	// Days of validity from Now; 0 means DefaultDays.
	Days int
	// Now is the start of validity; zero means time.Now(). NotBefore is set
	// an hour earlier so a peer whose clock lags a little still accepts it.
	Now time.Time
	// Key is the algorithm; empty means ECDSAP256.
	Key KeyType
}

// Generate returns a self-signed certificate and its PKCS#8 private key, both
// PEM encoded.
func Generate(req Request) (certPEM, keyPEM []byte, err error) {
	dnsNames, ips, err := sans(req)
	if err != nil {
		return nil, nil, err
	}
	days := req.Days
	if days == 0 {
		days = DefaultDays
	}
	if days < 0 || days > maxDays {
		return nil, nil, fmt.Errorf("generate certificate: days = %d: want 1 to %d", days, maxDays)
	}
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}

	key, err := newKey(req.Key)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("generate certificate: serial number: %w", err)
	}
	cn := "iofog-connector"
	if len(dnsNames) > 0 {
		cn = dnsNames[0]
	} else if len(ips) > 0 {
		cn = ips[0].String()
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"ioFog Connector"}},
		NotBefore:    now.Add(-time.Hour).UTC(),
		NotAfter:     now.AddDate(0, 0, days).UTC(),
		DNSNames:     dnsNames,
		IPAddresses:  ips,
		// The Controller and the agents use this certificate as their trust
		// anchor, so it is a CA (for itself only: path length 0) as well as
		// a TLS server certificate.
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if _, isRSA := key.(*rsa.PrivateKey); isRSA {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("generate certificate: sign: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("generate certificate: encode private key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, nil
}

func newKey(t KeyType) (crypto.Signer, error) {
	switch t {
	case "", ECDSAP256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate certificate: ECDSA key: %w", err)
		}
		return k, nil
	case RSA2048:
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, fmt.Errorf("generate certificate: RSA key: %w", err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("generate certificate: key type %q: want %q or %q", t, ECDSAP256, RSA2048)
}

// sans splits and checks the names, dropping duplicates.
func sans(req Request) ([]string, []net.IP, error) {
	var dnsNames []string
	var ips []net.IP
	seenName := map[string]bool{}
	addIP := func(ip net.IP) {
		for _, have := range ips {
			if have.Equal(ip) {
				return
			}
		}
		ips = append(ips, ip)
	}
	for _, n := range req.Names {
		n = strings.TrimSpace(n)
		if ip := net.ParseIP(n); ip != nil {
			addIP(ip)
			continue
		}
		if err := CheckDNSName(n); err != nil {
			return nil, nil, fmt.Errorf("generate certificate: %w", err)
		}
		// Certificates name hosts without the root's trailing dot; peers
		// match "example.com." against "example.com".
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if !seenName[n] {
			seenName[n] = true
			dnsNames = append(dnsNames, n)
		}
	}
	for _, ip := range req.IPs {
		if ip == nil {
			return nil, nil, errors.New("generate certificate: empty IP address")
		}
		addIP(ip)
	}
	if len(dnsNames) == 0 && len(ips) == 0 {
		return nil, nil, errors.New("generate certificate: no names: give the domain the Controller will use to reach this Connector")
	}
	return dnsNames, ips, nil
}

// CheckDNSName reports whether name can be a DNS subject alternative name:
// letters, digits and hyphens in dot-separated labels of 1 to 63 bytes, 253
// at most in all; a leading "*." wildcard label is allowed.
func CheckDNSName(name string) error {
	if name == "" {
		return errors.New("empty domain name")
	}
	if len(name) > 253 {
		return fmt.Errorf("domain name %q: longer than 253 characters", name)
	}
	labels := strings.Split(strings.TrimSuffix(name, "."), ".")
	for i, l := range labels {
		if i == 0 && l == "*" && len(labels) > 1 {
			continue
		}
		if l == "" || len(l) > 63 {
			return fmt.Errorf("domain name %q: label %q must be 1 to 63 characters", name, l)
		}
		for _, c := range l {
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-'
			if !ok {
				return fmt.Errorf("domain name %q: character %q is not allowed (letters, digits, '-', '.')", name, c)
			}
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("domain name %q: label %q must not start or end with '-'", name, l)
		}
	}
	return nil
}

// WritePair writes CertFile and KeyFile into dir, each atomically, the key
// with mode 0600 and the certificate 0644. Unless force is set it refuses,
// with an error matching fs.ErrExist, when either file is already there, so a
// pinned certificate is never replaced by accident. The key is written first:
// a crash between the two writes leaves at worst a key that does not match
// the old certificate, which the Connector reports at start-up, never a new
// certificate without its key.
func WritePair(dir string, certPEM, keyPEM []byte, force bool) error {
	if err := checkPair(certPEM, keyPEM); err != nil {
		return fmt.Errorf("write certificate to %s: %w", dir, err)
	}
	certPath := filepath.Join(dir, CertFile)
	keyPath := filepath.Join(dir, KeyFile)
	if !force {
		for _, p := range []string{certPath, keyPath} {
			if _, err := os.Lstat(p); err == nil {
				return fmt.Errorf("write certificate: %s already exists (keep it, or replace it on purpose with --force): %w", p, fs.ErrExist)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("write certificate: %w", err)
			}
		}
	}
	if err := atomicfile.Write(keyPath, keyPEM, 0o600, atomicfile.Options{}); err != nil {
		return fmt.Errorf("write private key: %w", err)
	}
	if err := atomicfile.Write(certPath, certPEM, 0o644, atomicfile.Options{}); err != nil {
		return fmt.Errorf("write certificate: %w", err)
	}
	return nil
}

// checkPair makes sure the two PEM blobs belong together, so WritePair never
// leaves a pair the Connector would refuse.
func checkPair(certPEM, keyPEM []byte) error {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return errors.New("certificate is not a PEM CERTIFICATE block")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return fmt.Errorf("parse certificate: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil || kb.Type != "PRIVATE KEY" {
		return errors.New("private key is not a PEM PKCS#8 PRIVATE KEY block")
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return fmt.Errorf("parse private key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return fmt.Errorf("private key of type %T cannot sign", key)
	}
	pub, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return fmt.Errorf("encode public key: %w", err)
	}
	if !bytes.Equal(pub, cert.RawSubjectPublicKeyInfo) {
		return errors.New("private key does not match the certificate")
	}
	return nil
}
