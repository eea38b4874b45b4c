package packaging

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/controlapi"
	"github.com/eclipse-iofog/iofog-connector/internal/testenv"
)

// TestInstallUpgradePurge installs the .deb on this machine for real (dpkg,
// as root), runs the installed daemon with the installed settings through its
// service script, adds mappings through the API, upgrades to a newer build
// with the user's edited settings in place, and checks that the edit survives
// and every mapping comes back on the same ports; then removes and purges.
func TestInstallUpgradePurge(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: this test installs, upgrades and purges the package on this machine")
	}
	requireRoot(t)
	need(t, "dpkg")
	need(t, "dpkg-deb")
	if out, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", Name).Output(); len(out) > 0 && !bytes.Contains(out, []byte("not-installed")) {
		t.Fatalf("%s is already on this machine (%s); this test installs and purges it, so remove it first: dpkg --purge %s", Name, out, Name)
	}
	if _, err := user.Lookup(User); err == nil {
		t.Fatalf("user %s already exists on this machine; this test creates and deletes it (userdel %s first)", User, User)
	}
	// The installed default settings: API on 8080, mappings from 6000-6050.
	requirePortsFree(t, []int{8080, 443}, 6000, 6050)

	bin := daemonBinary(t)
	dir := t.TempDir()
	v1 := buildPackage(t, dir, "1.0.0", bin)
	v2 := buildPackage(t, dir, "1.0.1", bin)
	svc := newService(t)
	t.Cleanup(func() { svc.cleanup(t) })

	// Install: files, user, permissions; the daemon is not started.
	out := mustRun(t, "dpkg", "-i", v1)
	if !strings.Contains(out, "not started") {
		t.Errorf("first install should say the daemon is not started yet:\n%s", out)
	}
	checkInstalledFiles(t)
	if svc.pid(t) != 0 {
		t.Fatal("the daemon runs right after a fresh install; it should wait for the user")
	}
	if p, err := exec.LookPath("systemd-analyze"); err == nil {
		if out, err := exec.Command(p, "verify", UnitPath).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", UnitPath, err, out)
		}
		verifyFirewallDropIn(t, p)
	} else {
		t.Log("systemd-analyze not installed: unit syntax not verified")
	}

	// Start through the service script; it must run as the service user with
	// no privilege beyond binding low ports.
	svc.start(t)
	pid1 := svc.waitUp(t)
	checkProcess(t, pid1)

	pub := addMapping(t, `{"type":"public","maxconnections":60,"heartbeatabsencethreshold":200000}`)
	priv := addMapping(t, `{"type":"private","maxconnectionsport1":1, "maxconnectionsport2":1, "heartbeatabsencethresholdport1":200000, "heartbeatabsencethresholdport2":200000}`)
	for _, m := range []mapping{pub, priv} {
		dialPorts(t, m)
	}
	relayRoundTrip(t, pub, dialPlain)
	if got := statusAll(t); got.Mappings != 2 || got.AvailablePorts != 51-4 {
		t.Errorf("status before upgrade: %+v, want 2 mappings and 47 free ports", got)
	}
	store, err := os.ReadFile(StorePath)
	if err != nil || !bytes.Contains(store, []byte(pub.ID)) || !bytes.Contains(store, []byte(priv.ID)) {
		t.Fatalf("mapping store %s does not hold both mappings: %v\n%s", StorePath, err, store)
	}

	// The user edits the settings (layout and content) before upgrading.
	edited := "{\n  \"ports\": [\"6000-6050\"],\n  \"exclude\": [\"6040-6050\"],\n  \"broker\": 12345,\n  \"address\": \"127.0.0.1\",\n  \"dev\": true\n}\n"
	if err := os.WriteFile(ConfigPath, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}

	// Upgrade: dpkg must keep the edit and restart the running daemon, which
	// must bring every mapping back on the same ports.
	mustRun(t, "dpkg", "-i", v2)
	if got, _ := os.ReadFile(ConfigPath); string(got) != edited {
		t.Fatalf("upgrade replaced the user's settings:\n%s", got)
	}
	if _, err := os.Stat(ConfigPath + ".dpkg-dist"); err == nil {
		t.Error("upgrade left a .dpkg-dist beside unchanged defaults")
	}
	if v := strings.TrimSpace(mustRun(t, "dpkg-query", "-W", "-f=${Version}", Name)); v != "1.0.1-1" {
		t.Fatalf("installed version after upgrade = %q, want 1.0.1-1", v)
	}
	pid2 := svc.waitUp(t)
	if pid2 == pid1 {
		t.Fatalf("daemon pid %d unchanged: the upgrade did not restart it onto the new binary", pid1)
	}
	checkProcess(t, pid2)
	got := statusAll(t)
	// 51 ports, 11 excluded by the edit, 4 held by the two mappings.
	if got.Mappings != 2 || got.AvailablePorts != 51-11-4 {
		t.Errorf("status after upgrade: %+v, want 2 mappings and 36 free ports (the edited exclude in effect)", got)
	}
	for _, m := range []mapping{pub, priv} {
		dialPorts(t, m)
		mappingStatus(t, m)
	}
	relayRoundTrip(t, pub, dialPlain)
	if store2, _ := os.ReadFile(StorePath); !bytes.Contains(store2, []byte(strconv.Itoa(pub.Port2))) {
		t.Errorf("store after upgrade lost the public mapping's ports:\n%s", store2)
	}

	// Stop through the service script: a graceful stop.
	svc.stop(t)
	if svc.pid(t) != 0 || portOpen(8080) {
		t.Fatal("daemon still running after stop")
	}

	// TLS mode as the README tells users to turn it on: make a certificate
	// with the installed binary as root, set "dev": false, start. The daemon
	// must read its key as the service user and bind 443 with its one
	// capability.
	edited = tlsMode(t, svc, edited, []mapping{pub, priv})
	if !svc.systemd {
		withoutStartStopDaemon(t, svc)
	}

	// Remove keeps settings, state and the user; purge removes them.
	mustRun(t, "dpkg", "-r", Name)
	for _, p := range []string{BinaryPath, UnitPath, InitPath} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s left after remove", p)
		}
	}
	for _, p := range []string{ConfigPath, StorePath} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("remove (not purge) deleted %s: %v", p, err)
		}
	}
	if got, _ := os.ReadFile(ConfigPath); string(got) != edited {
		t.Error("remove changed the user's settings")
	}
	if _, err := user.Lookup(User); err != nil {
		t.Errorf("remove (not purge) deleted the user: %v", err)
	}
	mustRun(t, "dpkg", "--purge", Name)
	for _, p := range []string{ConfigDir, LogDir, ShareDir, "/run/iofog-connector.pid"} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s left after purge", p)
		}
	}
	if _, err := user.Lookup(User); err == nil {
		t.Error("user left after purge")
	}
	if _, err := user.LookupGroup(User); err == nil {
		t.Error("group left after purge")
	}
}

// tlsMode returns the settings it left in place.
func tlsMode(t *testing.T, svc *service, settings string, maps []mapping) string {
	t.Helper()
	out := mustRun(t, BinaryPath, "cert", "--domain", "connector.test", "--ip", "127.0.0.1", "--name", "edge-test")
	if !strings.Contains(out, "iofog-controller connector add -n edge-test -d connector.test -i 127.0.0.1 -c ") || !strings.Contains(out, " -S -h\n") {
		t.Errorf("cert did not print the registration command:\n%s", out)
	}
	certPath := filepath.Join(ConfigDir, "server-cert.pem")
	for _, f := range []struct {
		name string
		mode os.FileMode
	}{{certPath, 0o644}, {filepath.Join(ConfigDir, "server-key.pem"), 0o600}} {
		st, err := os.Stat(f.name)
		if err != nil {
			t.Fatal(err)
		}
		owner, _ := user.LookupId(strconv.Itoa(int(st.Sys().(*syscall.Stat_t).Uid)))
		if st.Mode() != f.mode || owner == nil || owner.Username != User {
			t.Errorf("%s: mode %v owner %v; want %v owned by %s so the daemon can read it", f.name, st.Mode(), owner, f.mode, User)
		}
	}
	settings = strings.Replace(settings, `"dev": true`, `"dev": false`, 1)
	if err := os.WriteFile(ConfigPath, []byte(settings), 0o644); err != nil {
		t.Fatal(err)
	}
	svc.start(t)
	pid := svc.waitUp(t) // `iofog-connector status` now speaks HTTPS on 443
	checkProcess(t, pid)

	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	// As the Controller does: the certificate as the only root, the domain
	// as the name, whatever address it resolves to (here loopback).
	tlsConf := &tls.Config{RootCAs: roots, ServerName: "connector.test"}
	https := apiEndpoint{controlapi.New("https://127.0.0.1:443", &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf}})}
	var st allStatus
	https.call(t, "/api/v2/status", url.Values{"mappingid": {"all"}}, &st)
	if st.Status != "running" || st.Mappings != len(maps) {
		t.Errorf("HTTPS status: %+v, want running with %d mappings", st, len(maps))
	}
	// Every mapping port speaks TLS now, with the same certificate: agents
	// authenticate over it and public clients reach them through it.
	dialTLS := func(port int) (net.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), tlsConf)
	}
	for _, m := range maps {
		if m.Public {
			relayRoundTrip(t, m, dialTLS)
			continue
		}
		for _, p := range []int{m.Port1, m.Port2} {
			c, err := dialTLS(p)
			if err != nil {
				t.Errorf("TLS handshake on mapping port %d: %v", p, err)
				continue
			}
			c.Close()
		}
	}
	svc.stop(t)
	if svc.pid(t) != 0 || portOpen(443) {
		t.Fatal("daemon still running after stop")
	}
	return settings
}

// withoutStartStopDaemon runs the init script as on the RPM family, where
// there is no start-stop-daemon: in a private mount namespace in which the
// tool is hidden (bind-mounted over with /dev/null, which is not executable).
func withoutStartStopDaemon(t *testing.T, svc *service) {
	t.Helper()
	ssd, err := exec.LookPath("start-stop-daemon")
	if err != nil {
		t.Log("no start-stop-daemon on this host: the script already ran its fallback")
		return
	}
	hidden := func(action string) string {
		real, err := filepath.EvalSymlinks(ssd)
		if err != nil {
			t.Fatal(err)
		}
		return mustRun(t, "unshare", "--mount", "--propagation", "private", "sh", "-c",
			fmt.Sprintf("mount --bind /dev/null %s && ! command -v start-stop-daemon >/dev/null && exec %s %s", real, InitPath, action))
	}
	hidden("start")
	pid := svc.waitUp(t)
	checkProcess(t, pid)
	if out := hidden("status"); !strings.Contains(out, "iofog-connector is up and running.") {
		t.Errorf("init script status without start-stop-daemon:\n%s", out)
	}
	hidden("stop")
	if svc.pid(t) != 0 || portOpen(443) {
		t.Fatal("daemon still running after the fallback stop")
	}
}

// verifyFirewallDropIn installs the shipped firewall drop-in the way the
// README says, checks the unit still verifies with it, and takes it away.
func verifyFirewallDropIn(t *testing.T, systemdAnalyze string) {
	t.Helper()
	dir := "/etc/systemd/system/iofog-connector.service.d"
	if _, err := os.Stat(dir); err == nil {
		t.Fatalf("%s exists already; not touching it", dir)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	dropIn, err := os.ReadFile(filepath.Join(ShareDir, "firewall.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "firewall.conf"), dropIn, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(systemdAnalyze, "verify", UnitPath).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify with the firewall drop-in: %v\n%s", err, out)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t, "installs the .deb with dpkg into this machine's file system")
}

func requirePortsFree(t *testing.T, apiPorts []int, first, last int) {
	t.Helper()
	var busy []string
	for _, p := range append(apiPorts, seq(first, last)...) {
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(p))
		if err != nil {
			busy = append(busy, strconv.Itoa(p))
			continue
		}
		ln.Close()
	}
	if len(busy) > 0 {
		t.Fatalf("ports %s are in use; the installed settings need %v and %d-%d free (stop whatever holds them)", strings.Join(busy, ","), apiPorts, first, last)
	}
}

func seq(a, b int) []int {
	var s []int
	for i := a; i <= b; i++ {
		s = append(s, i)
	}
	return s
}

// daemonBinary is the binary `make build` left in out/, or one built now so
// that `go test ./...` works alone.
func daemonBinary(t *testing.T) string {
	t.Helper()
	built := filepath.Join("..", "out", "linux-"+runtime.GOARCH, "iofog-connector")
	if st, err := os.Stat(built); err == nil && st.Mode().IsRegular() {
		abs, _ := filepath.Abs(built)
		t.Logf("packaging %s (from make build)", abs)
		return abs
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		// The test binary runs where it was built, so the GOROOT it was
		// built with is still there.
		//lint:ignore SA1019 the deprecation is about binaries copied elsewhere
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := filepath.Join(t.TempDir(), "iofog-connector")
	cmd := exec.Command(goTool, "build", "-trimpath", "-o", out, "./cmd/iofog-connector")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/iofog-connector: %v\n%s", err, b)
	}
	return out
}

func buildPackage(t *testing.T, dir, version, bin string) string {
	t.Helper()
	opt := Options{Version: version, Arch: runtime.GOARCH, Binary: bin}
	var buf bytes.Buffer
	if err := Build(Deb, opt, &buf); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, FileName(Deb, opt))
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "_SYSTEMCTL_SKIP_REDIRECT=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, daemonLog())
	}
	return string(out)
}

// daemonLog is the tail of the daemon's log, for failure messages.
func daemonLog() string {
	b, err := os.ReadFile(filepath.Join(LogDir, "iofog-connector.log"))
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return "\n--- " + LogDir + "/iofog-connector.log (tail) ---\n" + string(b)
}

func checkInstalledFiles(t *testing.T) {
	t.Helper()
	u, err := user.Lookup(User)
	if err != nil {
		t.Fatalf("install did not create user %s: %v", User, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	if uid == 0 || uid >= 1000 {
		t.Errorf("user %s has uid %d, want a system uid (1-999)", User, uid)
	}
	passwd, _ := os.ReadFile("/etc/passwd")
	for _, line := range strings.Split(string(passwd), "\n") {
		if strings.HasPrefix(line, User+":") && !strings.HasSuffix(line, "nologin") {
			t.Errorf("service user can log in: %s", line)
		}
	}
	for _, c := range []struct {
		path  string
		mode  os.FileMode
		owner string
	}{
		{BinaryPath, 0o755, "root"},
		{ConfigPath, 0o644, "root"},
		{ConfigDir, 0o750 | os.ModeDir, User},
		{StorePath, 0o640, User},
		{LogDir, 0o750 | os.ModeDir, User},
		{UnitPath, 0o644, "root"},
		{InitPath, 0o755, "root"},
	} {
		st, err := os.Stat(c.path)
		if err != nil {
			t.Errorf("installed file: %v", err)
			continue
		}
		if st.Mode() != c.mode {
			t.Errorf("%s: mode %v, want %v", c.path, st.Mode(), c.mode)
		}
		owner, _ := user.LookupId(strconv.Itoa(int(st.Sys().(*syscall.Stat_t).Uid)))
		if owner == nil || owner.Username != c.owner {
			t.Errorf("%s: owner %v, want %s", c.path, owner, c.owner)
		}
	}
	if got, _ := os.ReadFile(ConfigPath); strings.TrimSpace(string(got)) != originalDefault {
		t.Errorf("installed settings %q, want the original's default", got)
	}
	if got, _ := os.ReadFile(StorePath); strings.TrimSpace(string(got)) != `{"mappings":[]}` {
		t.Errorf("installed store %q, want an empty one", got)
	}
}

// service drives the installed service the way this host runs services:
// systemctl when systemd is PID 1, else the SysV init script.
type service struct{ systemd bool }

func newService(t *testing.T) *service {
	_, err := os.Stat("/run/systemd/system")
	s := &service{systemd: err == nil}
	t.Logf("driving the service through %s", map[bool]string{true: "systemctl", false: InitPath}[s.systemd])
	return s
}

func (s *service) start(t *testing.T) {
	t.Helper()
	if s.systemd {
		mustRun(t, "systemctl", "start", Name)
		return
	}
	mustRun(t, InitPath, "start")
}

func (s *service) stop(t *testing.T) {
	t.Helper()
	if s.systemd {
		mustRun(t, "systemctl", "stop", Name)
		return
	}
	mustRun(t, InitPath, "stop")
}

// pid is the daemon's pid, 0 when it is not running.
func (s *service) pid(t *testing.T) int {
	t.Helper()
	var raw []byte
	if s.systemd {
		raw, _ = exec.Command("systemctl", "show", "-p", "MainPID", "--value", Name).Output()
	} else {
		raw, _ = os.ReadFile("/run/iofog-connector.pid")
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	if pid <= 0 {
		return 0
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		return 0
	}
	return pid
}

// waitUp waits until the installed binary's own status command and the
// service script both say the daemon is up, and returns its pid.
func (s *service) waitUp(t *testing.T) int {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second) // a hang guard, not a speed limit
	var last string
	for time.Now().Before(deadline) {
		out, err := exec.Command(BinaryPath, "status").CombinedOutput()
		last = string(out)
		if err == nil && strings.Contains(last, "iofog-connector is up and running.") {
			if !s.systemd {
				cmd := exec.Command(InitPath, "status")
				cmd.Env = append(os.Environ(), "_SYSTEMCTL_SKIP_REDIRECT=1")
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("%s status: %v\n%s", InitPath, err, out)
				}
			}
			if pid := s.pid(t); pid != 0 {
				return pid
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("daemon not up within 60s; `iofog-connector status` said:\n%s%s", last, daemonLog())
	return 0
}

// cleanup leaves the machine as it was, whatever happened: stop the daemon
// we started (by its pid), purge the package.
func (s *service) cleanup(t *testing.T) {
	if pid := s.pid(t); pid != 0 {
		syscall.Kill(pid, syscall.SIGTERM)
		for i := 0; i < 100 && s.pid(t) != 0; i++ {
			time.Sleep(100 * time.Millisecond)
		}
		if s.pid(t) != 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	cmd := exec.Command("dpkg", "--purge", Name)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "_SYSTEMCTL_SKIP_REDIRECT=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Logf("cleanup: dpkg --purge %s: %v\n%s", Name, err, out)
	}
	if _, err := user.Lookup(User); err == nil {
		t.Logf("cleanup: user %s still exists after purge", User)
	}
}

// checkProcess: the daemon runs as the service user, without new privileges,
// with CAP_NET_BIND_SERVICE as its only capability.
func checkProcess(t *testing.T, pid int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	u, err := user.Lookup(User)
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	if got := strings.Fields(fields["Uid"]); len(got) != 4 || got[0] != u.Uid || got[1] != u.Uid || got[2] != u.Uid {
		t.Errorf("daemon uid %q, want %s (%s)", fields["Uid"], u.Uid, User)
	}
	const netBindService = "0000000000000400"
	for _, k := range []string{"CapEff", "CapPrm", "CapBnd"} {
		if fields[k] != netBindService {
			t.Errorf("daemon %s = %s, want %s (CAP_NET_BIND_SERVICE only)", k, fields[k], netBindService)
		}
	}
	if fields["NoNewPrivs"] != "1" {
		t.Errorf("daemon NoNewPrivs = %q, want 1", fields["NoNewPrivs"])
	}
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); exe != BinaryPath {
		t.Errorf("daemon runs %q, want %s (a stale binary after upgrade?)", exe, BinaryPath)
	}
}

type mapping struct {
	Status string `json:"status"`
	ID     string `json:"id"`
	Port1  int    `json:"port1"`
	Port2  int    `json:"port2"`
	Pass1  string `json:"passcode1"`
	Public bool   `json:"-"`
}

// devAPI is the daemon's API in dev mode.
var devAPI = apiEndpoint{controlapi.New("http://127.0.0.1:8080", &http.Client{Timeout: 30 * time.Second})}

// apiEndpoint is a daemon's API, for calls that must succeed.
type apiEndpoint struct{ *controlapi.Client }

func api(t *testing.T, path string, form url.Values, v any) {
	t.Helper()
	devAPI.call(t, path, form, v)
}

func (e apiEndpoint) call(t *testing.T, path string, form url.Values, v any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Call(ctx, path, form, v); err != nil {
		t.Fatalf("POST %s %v: %v", path, form, err)
	}
}

func addMapping(t *testing.T, spec string) mapping {
	t.Helper()
	var m mapping
	api(t, "/api/v2/mapping/add", url.Values{"mapping": {spec}}, &m)
	if m.Status != "ok" || m.ID == "" || m.Port1 < 6000 || m.Port2 > 6050 || m.Port1 == m.Port2 {
		t.Fatalf("mapping/add %s: %+v", spec, m)
	}
	m.Public = strings.Contains(spec, `"public"`)
	return m
}

type allStatus struct {
	Status         string `json:"status"`
	Mappings       int    `json:"mappings"`
	AvailablePorts int    `json:"availablePorts"`
}

func statusAll(t *testing.T) allStatus {
	t.Helper()
	var s allStatus
	api(t, "/api/v2/status", url.Values{"mappingid": {"all"}}, &s)
	if s.Status != "running" {
		t.Errorf("status all: %+v", s)
	}
	return s
}

func mappingStatus(t *testing.T, m mapping) {
	t.Helper()
	var s map[string]any
	api(t, "/api/v2/status", url.Values{"mappingid": {m.ID}}, &s)
	keys := []string{"private1", "private2"}
	if m.Public {
		keys = []string{"public", "private"}
	}
	for _, k := range keys {
		if s[k] != "Active" {
			t.Errorf("mapping %s after upgrade: %s = %v, want Active (%v)", m.ID, k, s[k], s)
		}
	}
}

func dialPlain(port int) (net.Conn, error) {
	return net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 10*time.Second)
}

// relayRoundTrip acts as an agent on a public mapping's port1 (passcode,
// AUTHORIZED) and as a public client on its port2, and checks bytes flow
// both ways through the installed daemon.
func relayRoundTrip(t *testing.T, m mapping, dial func(port int) (net.Conn, error)) {
	t.Helper()
	agent, err := dial(m.Port1)
	if err != nil {
		t.Errorf("agent dial port %d: %v", m.Port1, err)
		return
	}
	defer agent.Close()
	agent.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := agent.Write([]byte(m.Pass1)); err != nil {
		t.Errorf("agent passcode: %v", err)
		return
	}
	ok := make([]byte, len("AUTHORIZED"))
	if _, err := io.ReadFull(agent, ok); err != nil || string(ok) != "AUTHORIZED" {
		t.Errorf("agent on port %d: got %q, %v; want AUTHORIZED", m.Port1, ok, err)
		return
	}
	pubConn, err := dial(m.Port2)
	if err != nil {
		t.Errorf("public dial port %d: %v", m.Port2, err)
		return
	}
	defer pubConn.Close()
	pubConn.SetDeadline(time.Now().Add(30 * time.Second))
	for _, hop := range []struct {
		from, to net.Conn
		msg      string
	}{{pubConn, agent, "GET / HTTP/1.0\r\n\r\n"}, {agent, pubConn, "HTTP/1.0 200 OK\r\n\r\nhello"}} {
		if _, err := hop.from.Write([]byte(hop.msg)); err != nil {
			t.Errorf("relay write: %v", err)
			return
		}
		got := make([]byte, len(hop.msg))
		if _, err := io.ReadFull(hop.to, got); err != nil || string(got) != hop.msg {
			t.Errorf("relay through ports %d/%d: got %q, %v; want %q", m.Port1, m.Port2, got, err, hop.msg)
			return
		}
	}
}

// dialPorts checks a mapping's listeners accept connections. A public
// mapping's port2 is left to relayRoundTrip: a public client that connects
// and leaves would be paired with the next agent connection.
func dialPorts(t *testing.T, m mapping) {
	t.Helper()
	ports := []int{m.Port1, m.Port2}
	if m.Public {
		ports = ports[:1]
	}
	for _, p := range ports {
		if !portOpen(p) {
			t.Errorf("mapping %s: nothing listens on port %d", m.ID, p)
		}
	}
}

func portOpen(port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
