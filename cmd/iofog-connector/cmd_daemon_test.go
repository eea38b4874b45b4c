package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/relay/certs"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
)

// lockedBuffer collects a daemon's log lines written from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// freeTCPPort returns a port free on all interfaces (the daemon's API
// listens on all), below the ephemeral range so that outgoing connections
// of tests running alongside cannot take it before the daemon binds it.
func freeTCPPort(t *testing.T) int {
	r := relaytest.FreePorts(t, 1)
	p, err := strconv.Atoi(strings.SplitN(r, "-", 2)[0])
	if err != nil {
		t.Fatalf("free port range %q: %v", r, err)
	}
	return p
}

func cli(t *testing.T, f func(context.Context, *cliEnv, []string) int, args ...string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code := f(ctx, &cliEnv{stdout: &out, stderr: &errb, version: "1.2.3-test"}, args)
	return code, out.String() + errb.String()
}

// startDaemon runs `iofog-connector run` with the given config JSON and
// returns the flags that reach it, and a channel with run's exit code.
func startDaemon(t *testing.T, conf string, extra ...string) ([]string, <-chan int, *lockedBuffer) {
	return startDaemonIn(t, conf, "", extra...)
}

// startDaemonIn is startDaemon with the given state directory ("" for a
// new one).
func startDaemonIn(t *testing.T, conf, stateDir string, extra ...string) ([]string, <-chan int, *lockedBuffer) {
	dir := t.TempDir()
	if stateDir == "" {
		stateDir = filepath.Join(dir, "state")
	}
	confFile := filepath.Join(dir, "iofog-connector.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	flags := append([]string{"--config", confFile}, extra...)
	logs := &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	exit := make(chan int, 1)
	go func() {
		exit <- cmdRun(ctx, &cliEnv{stdout: logs, stderr: logs, version: "1.2.3-test"},
			append([]string{"--state-dir", stateDir}, flags...))
		close(exit) // later receives (the cleanup's) return at once
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-exit:
		case <-time.After(time.Minute):
			t.Error("daemon did not stop")
		}
	})
	deadline := time.Now().Add(time.Minute)
	for {
		if code, _ := cli(t, cmdStatus, flags...); code == 0 {
			return flags, exit, logs
		}
		select {
		case code := <-exit:
			t.Fatalf("run exited %d before answering:\n%s", code, logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not answering after a minute:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDaemonCommandsDevMode(t *testing.T) {
	conf := fmt.Sprintf(`{"ports":[%q],"exclude":[],"broker":12345,"address":"0.0.0.0","dev":true,"api":{"http_port":%d},"discovery":{"enabled":false}}`,
		relaytest.FreePorts(t, 4), freeTCPPort(t))
	flags, exit, logs := startDaemon(t, conf)
	if !strings.Contains(logs.String(), "iofog-connector is up and running") || !strings.Contains(logs.String(), "mappings=0") {
		t.Errorf("start-up line missing:\n%s", logs)
	}
	code, out := cli(t, cmdStatus, flags...)
	if code != 0 || out != "iofog-connector is up and running.\n" {
		t.Errorf("status: %d %q", code, out)
	}
	code, out = cli(t, cmdMapping, append([]string{"add", "--type", "private"}, flags...)...)
	id := regexp.MustCompile(`(?m)^id\s+(\S+)$`).FindStringSubmatch(out)
	if code != 0 || id == nil || !regexp.MustCompile(`(?m)^passcode2\s+[0-9a-f-]{36}$`).MatchString(out) {
		t.Fatalf("mapping add: %d %q", code, out)
	}
	code, out = cli(t, cmdMapping, append([]string{"list"}, flags...)...)
	if code != 0 || !strings.Contains(out, id[1]) || !strings.Contains(out, "private") || strings.Contains(out, "passcode") {
		t.Errorf("mapping list: %d %q", code, out)
	}
	code, out = cli(t, cmdMapping, append([]string{"remove"}, append(flags, id[1])...)...)
	if code != 0 {
		t.Errorf("mapping remove: %d %q", code, out)
	}
	code, out = cli(t, cmdMapping, append([]string{"remove"}, append(flags, id[1])...)...)
	if code == 0 || !strings.Contains(out, "not found") {
		t.Errorf("second mapping remove: %d %q, want the Connector's error", code, out)
	}
	code, out = cli(t, cmdStop, flags...)
	if code != 0 || !strings.Contains(out, "iofog-connector is stopped.") {
		t.Errorf("stop: %d %q", code, out)
	}
	select {
	case code := <-exit:
		if code != 0 {
			t.Errorf("run exited %d after stop:\n%s", code, logs)
		}
	case <-time.After(time.Minute):
		t.Fatal("run still running after stop")
	}
	code, out = cli(t, cmdStatus, flags...)
	if code != 3 || !strings.HasPrefix(out, "iofog-connector is stopped.\n") {
		t.Errorf("status after stop: %d %q", code, out)
	}
}

func TestDaemonCommandsTLSModeTrustTheLocalCertificate(t *testing.T) {
	tlsDir := t.TempDir()
	certPEM, keyPEM, err := certs.Generate(certs.Request{Names: []string{"connector.example"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.WritePair(tlsDir, certPEM, keyPEM, false); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`{"ports":[%q],"exclude":[],"broker":12345,"address":"127.0.0.1","dev":false,"api":{"https_port":%d},"discovery":{"enabled":false}}`,
		relaytest.FreePorts(t, 4), freeTCPPort(t))
	flags, _, _ := startDaemon(t, conf, "--tls-dir", tlsDir)
	code, out := cli(t, cmdMapping, append([]string{"add", "--type", "public"}, flags...)...)
	if code != 0 || !strings.Contains(out, "public port") {
		t.Fatalf("mapping add over HTTPS: %d %q", code, out)
	}
	// Another certificate in --tls-dir: the CLI refuses to talk.
	other := t.TempDir()
	c2, k2, _ := certs.Generate(certs.Request{Names: []string{"connector.example"}})
	certs.WritePair(other, c2, k2, false)
	flags[len(flags)-1] = other
	if code, out := cli(t, cmdStatus, flags...); code != 3 {
		t.Errorf("status with a different certificate: %d %q, want it refused", code, out)
	}
}

func TestRunRefusesMissingTLSFilesNamingThem(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "c.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`{"ports":[%q],"exclude":[],"broker":12345,"address":"127.0.0.1","dev":false,"api":{"https_port":%d},"discovery":{"enabled":false}}`,
		relaytest.FreePorts(t, 2), freeTCPPort(t))), 0o644)
	code, out := cli(t, cmdRun, "--config", conf, "--state-dir", dir, "--tls-dir", dir)
	if code != 1 || !strings.Contains(out, filepath.Join(dir, "server-cert.pem")) {
		t.Errorf("run without TLS files: %d %q", code, out)
	}
}

// A stored mapping on the API port does not stop the daemon: it starts,
// answers, and `mapping list` shows that port as not listening, and why.
func TestDaemonStartsWithAStoredMappingOnTheAPIPort(t *testing.T) {
	apiPort, pool := freeTCPPort(t), relaytest.FreePorts(t, 4)
	lo, _, _ := strings.Cut(pool, "-")
	state := t.TempDir()
	store := fmt.Sprintf(`{"mappings":[{"id":"on-the-api-port","port1":%d,"port2":%s,"maxconnectionsport1":60,"maxconnectionsport2":0,`+
		`"passcodeport1":"00000000-0000-4000-8000-000000000001","passcodeport2":"","heartbeatabsencethresholdport1":200000,"heartbeatabsencethresholdport2":0}]}`,
		apiPort, lo)
	if err := os.WriteFile(filepath.Join(state, "configs.json"), []byte(store), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`{"ports":[%q],"exclude":[],"broker":12345,"address":"127.0.0.1","dev":true,"api":{"http_port":%d}}`, pool, apiPort)
	flags, _, _ := startDaemonIn(t, conf, state)
	code, out := cli(t, cmdMapping, append([]string{"list"}, flags...)...)
	want := fmt.Sprintf("on-the-api-port port1 not listening: port %d is the Connector's own API port", apiPort)
	if code != 0 || !strings.Contains(out, "port2 only") || !strings.Contains(out, want) {
		t.Errorf("mapping list: %d\n%s\nwant the mapping listening on port2 only, and the line %q", code, out, want)
	}
}
