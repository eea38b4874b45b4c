package tunnel_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/certs"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
	"github.com/eclipse-iofog/iofog-connector/tunnel"
)

// hangGuard bounds a test that would otherwise hang; it is not a timing
// assertion.
const hangGuard = 20 * time.Second

// connector starts a real Connector, in dev mode or with TLS, and returns
// it with the certificate body an agent config carries.
func connector(t *testing.T, dev bool, ports int) (*relaytest.Instance, string) {
	t.Helper()
	cfg := relaytest.Config(t, ports)
	opts := relay.Options{Config: cfg}
	certBody := ""
	if !dev {
		cfg.Dev = false
		certPEM, keyPEM, err := certs.Generate(certs.Request{Names: []string{"127.0.0.1"}})
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		opts.CertFile, opts.KeyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		os.WriteFile(opts.CertFile, certPEM, 0o644)
		os.WriteFile(opts.KeyFile, keyPEM, 0o600)
		// As the Controller sends it: the body without BEGIN/END lines.
		lines := strings.Split(strings.TrimSpace(string(certPEM)), "\n")
		certBody = strings.Join(lines[1:len(lines)-1], "")
	}
	in := relaytest.Start(t, opts)
	if !dev {
		pool := x509.NewCertPool()
		pem, _ := os.ReadFile(opts.CertFile)
		pool.AppendCertsFromPEM(pem)
		in.Client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	return in, certBody
}

func agentConfig(mode string, port int, passcode string, count, localport int, dev bool, cert string) tunnel.Config {
	return tunnel.Config{Mode: mode, Host: "127.0.0.1", Port: port, Passcode: passcode, ConnectionCount: count,
		LocalHost: "127.0.0.1", LocalPort: localport, HeartbeatFrequency: 20000, HeartbeatAbsenceThreshold: 60000,
		DevMode: dev, Cert: cert}
}

func runTunnel(t *testing.T, ctx context.Context, cfg tunnel.Config) *tunnel.Tunnel {
	t.Helper()
	tn := tunnel.New(tunnel.Options{Logger: relaytest.Logger(t), BackoffMin: 20 * time.Millisecond, BackoffMax: 500 * time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- tn.RunConfig(ctx, cfg) }()
	t.Cleanup(func() {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("RunConfig: %v", err)
			}
		case <-time.After(hangGuard):
			t.Error("tunnel did not stop")
		}
	})
	return tn
}

// closingService answers each connection with reply(request) and closes at
// once, as a service that sends "Connection: close" does. The tunnel must
// deliver the whole reply anyway.
func closingService(t *testing.T, reply func(req []byte) []byte) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req := make([]byte, 16)
				if _, err := io.ReadFull(c, req); err != nil {
					return
				}
				c.Write(reply(req))
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func random(t testing.TB, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// publicRequest is a public client: send req, read to EOF. (It does not
// half-close: the Connector ends a public session at the client's EOF.)
func publicRequest(port int, dev bool, req []byte) ([]byte, error) {
	c, err := dialPublic(port, dev)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(hangGuard))
	if _, err := c.Write(req); err != nil {
		return nil, err
	}
	return io.ReadAll(c)
}

func testPublic(t *testing.T, dev bool) {
	in, cert := connector(t, dev, 4)
	const pool = 4
	m := in.AddPublic(t, pool, 60000)
	// Replies bigger than socket buffers, so that the service's close
	// races the reply's delivery.
	svc := closingService(t, func(req []byte) []byte {
		return append(append([]byte("reply to "), req[:16]...), bytes.Repeat(req[:16], 32<<10)...)
	})
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	tn := runTunnel(t, ctx, agentConfig("public", m.Port1, m.Passcode1, pool, svc, dev, cert))
	if err := tn.Wait(ctx, func(s tunnel.Stats) bool { return s.Idle == pool }); err != nil {
		t.Fatalf("pool not up: %v", err)
	}
	// Five times the pool, eight at a time: used connections are replaced
	// while others are busy.
	const sessions = 5 * pool
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	errs := make(chan error, sessions)
	for i := range sessions {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			req := []byte(fmt.Sprintf("request %08d", i))
			got, err := publicRequest(m.Port2, dev, req)
			want := append(append([]byte("reply to "), req[:16]...), bytes.Repeat(req[:16], 32<<10)...)
			if err != nil {
				errs <- fmt.Errorf("session %d: %v", i, err)
			} else if !bytes.Equal(got, want) {
				errs <- fmt.Errorf("session %d: got %d bytes, want %d (reply lost or cut when the service closed)", i, len(got), len(want))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s := tn.Stats(); s.Sessions != sessions {
		t.Errorf("tunnel served %d sessions, want %d", s.Sessions, sessions)
	}
	// The pool refills.
	if err := tn.Wait(ctx, func(s tunnel.Stats) bool { return s.Idle == pool }); err != nil {
		t.Fatalf("pool not refilled: %v", err)
	}
}

func TestPublicDev(t *testing.T) { testPublic(t, true) }
func TestPublicTLS(t *testing.T) { testPublic(t, false) }

// rawPeer accepts on a private route's local port.
func dialLocal(t *testing.T, ctx context.Context, port int) net.Conn {
	t.Helper()
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.SetDeadline(time.Now().Add(hangGuard))
			return c
		}
		select {
		case <-ctx.Done():
			t.Fatalf("local port %d never opened: %v", port, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func testPrivateRaw(t *testing.T, dev bool) {
	in, cert := connector(t, dev, 2)
	m := in.AddPrivate(t, 60000)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	la, lb := freePort(t), freePort(t)
	ta := runTunnel(t, ctx, agentConfig("private", m.Port1, m.Passcode1, 1, la, dev, cert))
	tb := runTunnel(t, ctx, agentConfig("private", m.Port2, m.Passcode2, 1, lb, dev, cert))
	for _, tn := range []*tunnel.Tunnel{ta, tb} {
		if err := tn.Wait(ctx, func(s tunnel.Stats) bool { return s.Authorized == 1 }); err != nil {
			t.Fatal(err)
		}
	}
	// The route is one stream: local connections come and go on both ends
	// and carry it on. In the second round a's bytes are sent before b has
	// connected, and wait for it.
	for round := range 2 {
		a := dialLocal(t, ctx, la)
		ab, ba := random(t, 1<<20), random(t, 300<<10)
		wrote := make(chan error, 1)
		go func() { _, err := a.Write(ab); wrote <- err }()
		if round == 1 {
			if err := <-wrote; err != nil {
				t.Fatal(err)
			}
		}
		b := dialLocal(t, ctx, lb)
		gotB, gotA := make([]byte, len(ab)), make([]byte, len(ba))
		if _, err := io.ReadFull(b, gotB); err != nil || !bytes.Equal(gotB, ab) {
			t.Fatalf("round %d: a->b: %v, or the bytes differ", round, err)
		}
		if _, err := b.Write(ba); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(a, gotA); err != nil || !bytes.Equal(gotA, ba) {
			t.Fatalf("round %d: b->a: %v, or the bytes differ", round, err)
		}
		a.Close()
		b.Close()
	}
}

func TestPrivateRawDev(t *testing.T) { testPrivateRaw(t, true) }
func TestPrivateRawTLS(t *testing.T) { testPrivateRaw(t, false) }

func dialPublic(port int, dev bool) (net.Conn, error) {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if dev {
		return net.Dial("tcp", addr)
	}
	// The test plays a browser that has accepted the Connector's
	// self-signed certificate.
	return tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
}

// With no localport, a private route carries standard input and output
// once (as netcat would), here against a peer that listens on a port.
func TestPrivateRawStdio(t *testing.T) {
	in, _ := connector(t, true, 2)
	m := in.AddPrivate(t, 60000)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	lb := freePort(t)
	runTunnel(t, ctx, agentConfig("private", m.Port2, m.Passcode2, 1, lb, true, ""))

	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	ta := tunnel.New(tunnel.Options{Logger: relaytest.Logger(t), Stdin: inR, Stdout: outW})
	done := make(chan error, 1)
	go func() { done <- ta.RunConfig(ctx, agentConfig("private", m.Port1, m.Passcode1, 1, 0, true, "")) }()

	b := dialLocal(t, ctx, lb)
	defer b.Close()
	msg := random(t, 200<<10)
	go inW.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(b, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("stdin -> peer: %v, or the bytes differ", err)
	}
	b.Write([]byte("answer"))
	ans := make([]byte, 6)
	if _, err := io.ReadFull(outR, ans); err != nil || string(ans) != "answer" {
		t.Fatalf("peer -> stdout: %q, %v", ans, err)
	}
	// End of standard input ends the run once the route has nothing more.
	inW.Close()
	b.Close()
	go io.Copy(io.Discard, outR)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("RunConfig: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the stdio run did not end after standard input did")
	}
}
