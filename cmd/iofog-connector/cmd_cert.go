package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/eclipse-iofog/iofog-connector/relay/certs"
)

// defaultTLSDir is where the daemon looks for its certificate in non-dev mode.
const defaultTLSDir = "/etc/iofog-connector"

// cmdCert writes a self-signed certificate and key for the non-dev mode and
// tells the user how to register the Connector with a Controller.
func cmdCert(_ context.Context, env *cliEnv, args []string) int {
	fsFlags := flag.NewFlagSet("cert", flag.ContinueOnError)
	fsFlags.SetOutput(env.stderr)
	domain := fsFlags.String("domain", "", "host name or IP address the Controller and agents use to reach this Connector (required)")
	var ips []net.IP
	fsFlags.Func("ip", "extra IP address to name in the certificate (repeatable)", func(s string) error {
		ip := net.ParseIP(strings.TrimSpace(s))
		if ip == nil {
			return fmt.Errorf("%q is not an IP address", s)
		}
		ips = append(ips, ip)
		return nil
	})
	days := fsFlags.Int("days", certs.DefaultDays, "days of validity")
	keyType := fsFlags.String("key", string(certs.ECDSAP256), "key type: ecdsa-p256 or rsa-2048")
	out := fsFlags.String("out", defaultTLSDir, "directory to write server-cert.pem and server-key.pem into (created if missing)")
	force := fsFlags.Bool("force", false, "replace existing files (agents and the Controller must then be given the new certificate)")
	name := fsFlags.String("name", "", "Connector name for the printed Controller command (default: this host's name)")
	publicIP := fsFlags.String("public-ip", "", "public IP for the printed Controller command (default: the domain if it is an IP, else the first --ip)")
	ctrlPath := fsFlags.String("controller-cert", "", "where the certificate will be on the Controller host, for the printed command (default: /etc/iofog-controller/NAME-server-cert.pem)")
	fsFlags.Usage = func() {
		fmt.Fprintln(env.stderr, "Usage: iofog-connector cert --domain D [--ip IP]... [--days N] [--out DIR] [--force]")
		fmt.Fprintln(env.stderr, "Writes a self-signed TLS certificate and key for the non-dev mode (\"dev\": false).")
		fsFlags.PrintDefaults()
	}
	if err := fsFlags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fsFlags.NArg() > 0 {
		fmt.Fprintf(env.stderr, "iofog-connector cert: unexpected argument %q\n", fsFlags.Arg(0))
		return 2
	}
	if *domain == "" {
		fmt.Fprintln(env.stderr, "iofog-connector cert: --domain is required: the host name or IP address the Controller will call this Connector at")
		return 2
	}
	// "203.0.113.7." and "edge.example.com." name the same hosts as
	// without the root's dot, which the Controller and agents never use.
	*domain = strings.TrimSuffix(strings.TrimSpace(*domain), ".")

	certPEM, keyPEM, err := certs.Generate(certs.Request{
		Names: []string{*domain},
		IPs:   ips,
		Days:  *days,
		Now:   time.Now(),
		Key:   certs.KeyType(*keyType),
	})
	if err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector cert: %v\n", err)
		return 1
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector cert: create the --out directory %s: %v\n", *out, err)
		return 1
	}
	// The printed steps are pasted elsewhere: name the directory in full.
	if abs, err := filepath.Abs(*out); err == nil {
		*out = abs
	}
	if err := certs.WritePair(*out, certPEM, keyPEM, *force); err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector cert: %v\n", err)
		return 1
	}
	certPath := filepath.Join(*out, certs.CertFile)
	keyPath := filepath.Join(*out, certs.KeyFile)
	if err := giveToDirOwner(*out, certPath, keyPath); err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector cert: %v\n", err)
		return 1
	}

	if *name == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "connector"
		}
		*name = strings.SplitN(h, ".", 2)[0]
	}
	if *publicIP == "" {
		switch {
		case net.ParseIP(*domain) != nil:
			*publicIP = *domain
		case len(ips) > 0:
			*publicIP = ips[0].String()
		default:
			*publicIP = "PUBLIC_IP"
		}
	}
	if *ctrlPath == "" {
		*ctrlPath = "/etc/iofog-controller/" + *name + "-server-cert.pem"
	}
	printNextSteps(env.stdout, nextSteps{
		certPath: certPath, keyPath: keyPath, certPEM: certPEM, dir: *out,
		name: *name, domain: *domain, publicIP: *publicIP, ctrlPath: *ctrlPath,
	})
	return 0
}

// giveToDirOwner hands the new files to the owner of the directory when we
// run as root: `sudo iofog-connector cert` in /etc/iofog-connector must leave
// a key that the daemon's own user can read.
func giveToDirOwner(dir string, files ...string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("stat %s: %w", dir, err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || sys.Uid == 0 {
		return nil
	}
	for _, f := range files {
		if err := os.Lchown(f, int(sys.Uid), int(sys.Gid)); err != nil {
			return fmt.Errorf("give %s to the owner of %s: %w", f, dir, err)
		}
	}
	return nil
}

type nextSteps struct {
	certPath, keyPath                string
	dir                              string // where the pair was written
	certPEM                          []byte
	name, domain, publicIP, ctrlPath string
}

func printNextSteps(w io.Writer, s nextSteps) {
	fmt.Fprintf(w, "Wrote %s (certificate for %s)\n", s.certPath, describeSANs(s.certPEM))
	fmt.Fprintf(w, "Wrote %s (private key, mode 0600)\n\n", s.keyPath)
	fmt.Fprintln(w, "Next:")
	if filepath.Clean(s.dir) == defaultTLSDir {
		fmt.Fprintln(w, "1. Turn TLS on: set \"dev\": false in /etc/iofog-connector/iofog-connector.conf, then")
		fmt.Fprintln(w, "     service iofog-connector restart")
	} else {
		// The daemon looks in defaultTLSDir unless told otherwise.
		fmt.Fprintln(w, "1. Turn TLS on: set \"dev\": false in /etc/iofog-connector/iofog-connector.conf.")
		fmt.Fprintf(w, "   The daemon reads %s and %s from %s, not from %s:\n", certs.CertFile, certs.KeyFile, defaultTLSDir, s.dir)
		fmt.Fprintf(w, "   copy both files there and run `service iofog-connector restart`, or start it with\n")
		fmt.Fprintf(w, "     iofog-connector run --tls-dir %s\n", shellQuote(s.dir))
	}
	fmt.Fprintln(w, "   (the API moves to HTTPS on port 443 and every mapping port speaks TLS).")
	fmt.Fprintf(w, "2. Copy %s to the Controller host as %s, e.g.\n", s.certPath, s.ctrlPath)
	fmt.Fprintf(w, "     scp %s CONTROLLER_HOST:%s\n", shellQuote(s.certPath), shellQuote(s.ctrlPath))
	fmt.Fprintln(w, "   (-c is a file path on the Controller host; the Controller also sends the")
	fmt.Fprintln(w, "   certificate to agents as the only root they trust for this Connector).")
	fmt.Fprintln(w, "3. On the Controller host, register this Connector:")
	fmt.Fprintf(w, "     iofog-controller connector add -n %s -d %s -i %s -c %s -S -h\n",
		shellQuote(s.name), shellQuote(s.domain), shellQuote(s.publicIP), shellQuote(s.ctrlPath))
	if s.publicIP == "PUBLIC_IP" {
		fmt.Fprintln(w, "   Replace PUBLIC_IP with the address users reach this host at (or pass --public-ip).")
	}
	fmt.Fprintf(w, "   Agents will dial %s, which the certificate names, so it must resolve for them too.\n", s.domain)
}

// describeSANs lists the names in the certificate as the user will check them.
func describeSANs(certPEM []byte) string {
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return "?"
	}
	var names []string
	for _, n := range cert.DNSNames {
		names = append(names, "DNS:"+n)
	}
	for _, ip := range cert.IPAddresses {
		names = append(names, "IP:"+ip.String())
	}
	return strings.Join(names, ", ") + ", valid until " + cert.NotAfter.Format("2006-01-02")
}

// shellQuote quotes s for a POSIX shell when it needs it, so the printed
// command can be pasted as is.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:@,+=") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func parseCertPEM(certPEM []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil {
		return nil, errors.New("no PEM block")
	}
	return x509.ParseCertificate(b.Bytes)
}
