package relay_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/eclipse-iofog/iofog-connector/internal/testenv"
	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
)

// isolated runs the calling test again in a child process with namespaces
// of its own (flags: CLONE_NEWNET, CLONE_NEWNS), so that it can add
// addresses or mount file systems without touching the host. It returns
// true in the child, where the test does its work, and false in the
// parent, which only reports the child's outcome.
func isolated(t *testing.T, flags uintptr, why string) bool {
	t.Helper()
	const env = "IOFOG_RELAY_ISOLATED"
	if os.Getenv(env) == t.Name() {
		return true
	}
	testenv.RequireRoot(t, why)
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), env+"="+t.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in a child process with namespaces of its own: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("the child process did not run the test:\n%s", out)
	}
	return false
}

// clientFrom is an HTTP client whose connections come from source address src.
func clientFrom(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: hangGuard}
	return &http.Client{Timeout: hangGuard, Transport: &http.Transport{
		DialContext:       func(ctx context.Context, n, a string) (net.Conn, error) { return d.DialContext(ctx, n, a) },
		DisableKeepAlives: true,
	}}
}

// api.allow: sources outside the list get 403 with the Controller's error
// shape, on the API and on /metrics; listed sources and this host itself
// are served.
func TestAPIAllowRefusesOtherSources(t *testing.T) {
	if !isolated(t, unix.CLONE_NEWNET, "adds addresses in a network namespace of its own") {
		return
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"192.0.2.2/32", "192.0.2.3/32"} {
		addr, _ := netlink.ParseAddr(a)
		if err := netlink.AddrAdd(lo, addr); err != nil {
			t.Fatalf("add %s: %v", a, err)
		}
	}
	cfg := relaytest.Config(t, 4)
	cfg.API.Listen = ""
	cfg.API.Allow = []string{"192.0.2.3", "198.51.100.0/24"}
	logs, log := newLogBuffer(t)
	in := relaytest.Start(t, relay.Options{Config: cfg, Logger: log})
	port := strconv.Itoa(in.APIAddr().(*net.TCPAddr).Port)
	start := time.Now()

	call := func(src, method, path string) (int, map[string]any, bool) {
		t.Helper()
		var body io.Reader
		if method == http.MethodPost {
			body = strings.NewReader("mappingid=all")
		}
		req, _ := http.NewRequest(method, "http://192.0.2.3:"+port+path, body)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := clientFrom(src).Do(req)
		if err != nil {
			t.Fatalf("%s %s from %s: %v", method, path, src, err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		var out map[string]any
		if path != "/metrics" || resp.StatusCode != 200 {
			if err := json.Unmarshal(data, &out); err != nil {
				t.Errorf("%s %s from %s: HTTP %d, body not JSON: %q", method, path, src, resp.StatusCode, data)
			}
		}
		return resp.StatusCode, out, resp.Close
	}
	for _, path := range []string{"/api/v2/status", "/metrics"} {
		method := http.MethodPost
		if path == "/metrics" {
			method = http.MethodGet
		}
		code, out, _ := call("192.0.2.3", method, path)
		if code != 200 {
			t.Errorf("%s from an allowed source: HTTP %d %v", path, code, out)
		}
		code, out, _ = call("127.0.0.1", method, path)
		if code != 200 {
			t.Errorf("%s from this host (loopback): HTTP %d %v", path, code, out)
		}
		code, out, closed := call("192.0.2.2", method, path)
		msg, _ := out["errormessage"].(string)
		if code != http.StatusForbidden || out["status"] != "failed" || !strings.Contains(msg, "192.0.2.2") || !closed {
			t.Errorf("%s from a source not in api.allow: HTTP %d %v (close %v); want 403, the error shape naming the source, and a close",
				path, code, out, closed)
		}
	}
	// A stranger cannot flood the log: every refusal is counted, one line
	// a minute is written.
	for range 30 {
		call("192.0.2.2", http.MethodPost, "/api/v2/status")
	}
	if n := metric(t, in, "iofog_connector_api_refused_total"); n != 32 {
		t.Errorf("iofog_connector_api_refused_total = %v, want 32", n)
	}
	// One line a minute: on a machine so slow that this took minutes,
	// one more per minute is fine.
	if n, most := strings.Count(logs.String(), "refused API requests"), 1+int(time.Since(start)/time.Minute); n < 1 || n > most {
		t.Errorf("%d log lines for 32 refusals, want 1 to %d", n, most)
	}
}

// Only TLS 1.3, or TLS 1.2 with AEAD suites, on the API and the data ports:
// a client that offers only CBC with SHA-1 is refused.
func TestTLSRefusesCBCSuites(t *testing.T) {
	certFile, keyFile, certPEM := selfSigned(t, "PKCS#8") // ECDSA
	cfg := relaytest.Config(t, 4)
	cfg.Dev = false
	in := relaytest.Start(t, relay.Options{Config: cfg, CertFile: certFile, KeyFile: keyFile})
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	in.Client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}}
	m := in.AddPublic(t, 60, 200000)

	for name, addr := range map[string]string{"API": in.APIAddr().String(), "agent port": addr(m.Port1), "public port": addr(m.Port2)} {
		for _, tc := range []struct {
			what   string
			conf   *tls.Config
			accept bool
		}{
			{"TLS 1.2, CBC with SHA-1 only", &tls.Config{MaxVersion: tls.VersionTLS12,
				CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA}}, false},
			{"TLS 1.2, CBC with SHA-256 only", &tls.Config{MaxVersion: tls.VersionTLS12,
				CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}}, false},
			{"TLS 1.2, AES-GCM", &tls.Config{MaxVersion: tls.VersionTLS12,
				CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}, true},
			{"TLS 1.2, ChaCha20-Poly1305", &tls.Config{MaxVersion: tls.VersionTLS12,
				CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}}, true},
			{"TLS 1.3", &tls.Config{MinVersion: tls.VersionTLS13}, true},
		} {
			conf := tc.conf.Clone()
			conf.RootCAs, conf.ServerName = roots, "127.0.0.1"
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: hangGuard}, "tcp", addr, conf)
			if err == nil {
				c.Close()
			}
			if (err == nil) != tc.accept {
				t.Errorf("%s, %s: handshake error %v, want accepted=%v", name, tc.what, err, tc.accept)
			}
		}
	}
}

// A corrupt store that cannot be moved aside (the file system is
// read-only) does not stop the Connector: it starts on the previous
// generation, says so, leaves the corrupt file as it is, and refuses to
// write the store (so refuses adds) until the file can be moved aside.
func TestCorruptStoreOnAReadOnlyFileSystem(t *testing.T) {
	if !isolated(t, unix.CLONE_NEWNS, "mounts a read-only file system in a mount namespace of its own") {
		return
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		t.Fatalf("make mounts private: %v", err)
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	remount := func(flags uintptr) {
		t.Helper()
		if err := unix.Mount("", dir, "", unix.MS_REMOUNT|flags, ""); err != nil {
			t.Fatalf("remount: %v", err)
		}
	}
	cfg := relaytest.Config(t, 6)
	p := poolPorts(t, cfg)
	path := filepath.Join(dir, relay.StoreFile)
	writeStore(t, path+".prev", storeRecord("good", p[0], p[1]))
	corrupt := []byte(`{"mappings":[{"id":"good","port1":` + strconv.Itoa(p[0]) + `,"po`)
	if err := os.WriteFile(path, corrupt, 0o600); err != nil {
		t.Fatal(err)
	}
	remount(unix.MS_RDONLY)

	logs, log := newLogBuffer(t)
	in := relaytest.Start(t, relay.Options{Config: cfg, StateDir: dir, Logger: log})
	if code, st := in.Post(t, "/api/v2/status", url.Values{"mappingid": {"good"}}); code != 200 || st["public"] != "Active" {
		t.Errorf("the previous generation's mapping: HTTP %d %v, want it served", code, st)
	}
	if !strings.Contains(logs.String(), "cannot be moved aside") || !strings.Contains(logs.String(), "restored_from="+path+".prev") {
		t.Errorf("the log does not say that the store is corrupt, cannot be moved, and what was used instead")
	}
	code, r := in.Post(t, "/api/v2/mapping/add", url.Values{"mapping": {publicMapping}})
	if msg, _ := r["errormessage"].(string); code < 500 || !strings.Contains(msg, "corrupt") {
		t.Errorf("add while the corrupt store cannot be moved: HTTP %d %v; want a refusal that says why", code, r)
	}
	if data, _ := os.ReadFile(path); string(data) != string(corrupt) {
		t.Errorf("the corrupt store was changed: %q", data)
	}

	// Once the file system is writable again, the next write moves the
	// evidence aside first and keeps the good previous generation.
	remount(0)
	m := in.AddPublic(t, 60, 200000)
	aside, _ := filepath.Glob(path + ".corrupt-*")
	if len(aside) != 1 {
		t.Fatalf("corrupt store not moved aside: %v", aside)
	}
	if data, _ := os.ReadFile(aside[0]); string(data) != string(corrupt) {
		t.Errorf("%s = %q, want the corrupt store as it was", aside[0], data)
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), `"good"`) || !strings.Contains(string(data), m.ID) {
		t.Errorf("store after the add: %s", data)
	}
	if data, _ := os.ReadFile(path + ".prev"); !strings.Contains(string(data), `"good"`) {
		t.Errorf("the previous generation was replaced by the corrupt store: %s", data)
	}

	// No previous generation either: the Connector starts empty.
	in.Stop(t)
	os.WriteFile(path, corrupt, 0o600)
	os.Remove(path + ".prev")
	for _, f := range aside {
		os.Remove(f)
	}
	remount(unix.MS_RDONLY)
	in = relaytest.Start(t, relay.Options{Config: cfg, StateDir: dir, Logger: log})
	if code, st := in.Post(t, "/api/v2/status", url.Values{"mappingid": {"all"}}); code != 200 || st["mappings"] != 0.0 {
		t.Errorf("status with a corrupt store and no previous generation: HTTP %d %v, want running, empty", code, st)
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		t.Error("the corrupt store vanished")
	}
	in.Stop(t)
}
