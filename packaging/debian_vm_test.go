package packaging

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/controlapi"
	"github.com/eclipse-iofog/iofog-connector/image"
	"github.com/eclipse-iofog/iofog-connector/internal/testenv"
	"github.com/eclipse-iofog/iofog-connector/qemu"
)

// maxExposure is `systemd-analyze security iofog-connector` on Debian
// bookworm's systemd (252) for the shipped unit (the README states it). A
// change to the unit that weakens its sandbox fails the test.
const maxExposure = 2.1

// agentPort is where the test agent listens in the guest.
const agentPort = 7777

// TestDebianSystemd installs the .deb on Debian bookworm booted under QEMU
// with systemd as PID 1, as a user would (apt install ./file.deb), and drives
// it through everything the README promises there: service and systemctl,
// a mapping relaying bytes, the firewall drop-in, a crash, a reboot, an
// upgrade, TLS on 443 as a non-root user, the journal, and a purge that
// leaves the system as it found it.
func TestDebianSystemd(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: this test builds a Debian system and boots it under QEMU")
	}
	cacheDir := testenv.RequireQEMU(t, func() (string, error) {
		if err := qemu.Available("x86_64"); err != nil {
			return "", err
		}
		if err := qemu.DebianTools(); err != nil {
			return "", err
		}
		return image.DefaultCacheDir()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Minute)
	defer cancel()

	start := time.Now()
	sys, err := qemu.BuildDebian(ctx, cacheDir, logWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Debian system %s ready after %s", sys.Dir, time.Since(start).Round(time.Second))

	dir := t.TempDir()
	bin := daemonBinary(t)
	v1 := buildPackage(t, dir, "1.0.0", bin)
	v2 := buildPackage(t, dir, "1.0.1", bin)
	noDependencies(t, v1)
	agent := buildAgent(t, dir)
	disk := filepath.Join(dir, "debian.img")
	if err := sys.Disk(disk, qemu.DiskFile{Src: agent, Dst: "/usr/local/sbin/iofog-vm-agent", Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	boot, err := sys.Boot(cacheDir, "")
	if err != nil {
		t.Fatal(err)
	}

	last := start
	step := func(done string) { // where the time goes, for the README's figures
		t.Logf("%s: %s", done, time.Since(last).Round(time.Second))
		last = time.Now()
	}
	step("Debian system, packages, disk")
	g := bootGuest(ctx, t, disk, boot)
	step("boot")
	for _, p := range []string{v1, v2} {
		g.put(p, "/root/"+filepath.Base(p), 0o644)
	}
	before := g.snapshot()

	// Install as a user would. apt has no package lists and the guest no
	// route out: it must need nothing but the file.
	out := g.sh("apt install -y ./" + filepath.Base(v1))
	// The comparison after purge must be able to see the package's files.
	if d := diffLines(before, g.snapshot()); !strings.Contains(d, "+ "+BinaryPath+" f 755 root:root") || !strings.Contains(d, "  /etc/passwd") {
		t.Errorf("the file list after install does not show the package's binary and user:\n%s", d)
	}
	if !strings.Contains(out, "not started") {
		t.Errorf("apt install did not say the daemon is not started yet:\n%s", out)
	}
	if m := regexp.MustCompile(`(?s)NEW packages will be installed:\n(.*?)\n\S`).FindStringSubmatch(out); m == nil || strings.TrimSpace(m[1]) != Name {
		t.Errorf("apt install brought in more than the package:\n%s", out)
	}
	if got := g.out("systemctl is-enabled " + Name); got != "enabled" {
		t.Errorf("after install, systemctl is-enabled = %q, want enabled", got)
	}
	if got := g.out("systemctl is-active " + Name); got != "inactive" {
		t.Errorf("after install, systemctl is-active = %q, want inactive (a fresh install waits for the user)", got)
	}

	step("install")

	// service and systemctl agree, both ways.
	g.sh("service " + Name + " start")
	pid := g.waitActive(0)
	g.checkProcess(pid)
	g.agree(true)
	g.sh("service " + Name + " stop")
	g.agree(false)
	g.sh("systemctl start " + Name)
	pid = g.waitActive(0)
	g.agree(true)

	step("service and systemctl")

	// A mapping added through the API relays bytes, from the host through
	// QEMU's forwarded ports.
	api := controlapi.New("http://"+g.vm.Addr(8080), &http.Client{Timeout: apiTimeout})
	pub := g.addMapping(api, controlapi.Public(60, 200000))
	priv := g.addMapping(api, controlapi.Private(1, 200000))
	maps := []mapping{pub, priv}
	relayRoundTrip(t, pub, g.dial)
	g.checkMappings(api, maps)

	step("mappings")

	// The firewall, turned on as the README says: the setting and the
	// shipped drop-in. The table holds the mapping ports while the daemon
	// runs and is gone when it stops.
	settings := strings.Replace(originalDefault, `"dev":true`, `"dev":true,"firewall":{"enabled":true}`, 1)
	g.write(ConfigPath, settings)
	g.sh("mkdir -p /etc/systemd/system/iofog-connector.service.d && " +
		"cp /usr/share/iofog-connector/firewall.conf /etc/systemd/system/iofog-connector.service.d/ && " +
		"systemctl daemon-reload && systemctl restart " + Name)
	pid = g.waitActive(pid)
	g.checkTable(maps)
	g.sh("systemctl stop " + Name)
	if code, out := g.run("nft list table inet iofog"); code == 0 {
		t.Errorf("the firewall table outlived the daemon:\n%s", out)
	}
	g.sh("systemctl start " + Name)
	pid = g.waitActive(pid)
	g.checkTable(maps)

	step("firewall")

	// A crash: systemd restarts it (Restart=on-failure) with every mapping.
	g.sh("systemctl kill -s KILL " + Name)
	g.waitActive(pid)
	g.checkMappings(api, maps)
	relayRoundTrip(t, pub, g.dial)
	g.checkTable(maps)

	step("crash")

	// A reboot brings it back, enabled, with every mapping.
	g = g.reboot(ctx, disk, boot)
	if got := g.out("systemctl is-enabled " + Name); got != "enabled" {
		t.Errorf("after reboot, systemctl is-enabled = %q", got)
	}
	pid = g.waitActive(0)
	g.checkProcess(pid)
	api = controlapi.New("http://"+g.vm.Addr(8080), &http.Client{Timeout: apiTimeout})
	g.checkMappings(api, maps)
	relayRoundTrip(t, pub, g.dial)
	g.checkTable(maps)

	step("reboot")

	// An upgrade keeps the edited settings and the mappings, and restarts
	// the daemon on the new binary.
	out = g.sh("apt install -y ./" + filepath.Base(v2))
	if got := g.out("cat " + ConfigPath); got != settings {
		t.Errorf("the upgrade changed the edited settings to:\n%s\n%s", got, out)
	}
	if got := g.out("dpkg-query -W -f='${Version}' " + Name); got != "1.0.1-1" {
		t.Errorf("version after upgrade = %q, want 1.0.1-1", got)
	}
	pid = g.waitActive(pid)
	g.checkProcess(pid)
	g.checkMappings(api, maps)
	relayRoundTrip(t, pub, g.dial)

	step("upgrade")

	// TLS as the README says: a certificate from `iofog-connector cert`,
	// "dev": false, a restart. The API and every mapping port speak TLS on
	// 443 and the mapping ports, with the daemon still not root.
	out = g.sh(BinaryPath + " cert --domain connector.test --ip 10.0.2.15 --name edge-test")
	if !strings.Contains(out, "iofog-controller connector add -n edge-test -d connector.test") {
		t.Errorf("cert did not print the registration command:\n%s", out)
	}
	settings = strings.Replace(settings, `"dev":true`, `"dev":false`, 1)
	g.write(ConfigPath, settings)
	g.sh("service " + Name + " restart")
	pid = g.waitActive(pid)
	g.checkProcess(pid)
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(g.out("cat " + ConfigDir + "/server-cert.pem"))) {
		t.Fatal("server-cert.pem holds no certificate")
	}
	tlsConf := &tls.Config{RootCAs: roots, ServerName: "connector.test"}
	https := controlapi.New("https://"+g.vm.Addr(443), &http.Client{Timeout: apiTimeout, Transport: &http.Transport{TLSClientConfig: tlsConf}})
	g.checkMappings(https, maps)
	relayRoundTrip(t, pub, func(port int) (net.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", g.vm.Addr(port), tlsConf)
	})
	g.checkTable(maps)

	step("TLS")

	// The journal has the lines the README promises, and the sandbox is as
	// tight as it was.
	journal := g.out("journalctl -u " + Name + " --no-pager -o cat")
	for _, want := range []string{
		"iofog-connector is up and running", "mapping added", "firewall table applied",
		"shutting down: signal received", "iofog-connector is stopped",
		"mappings=2", `mode="TLS`,
	} {
		if !strings.Contains(journal, want) {
			t.Errorf("journalctl -u %s lacks %q", Name, want)
		}
	}
	g.checkExposure()

	step("journal, systemd-analyze security")

	// Purge: the user takes away the drop-in they added (purge leaves it, as
	// the README says), then everything the package made goes, and nothing
	// else does.
	g.sh("rm -r /etc/systemd/system/iofog-connector.service.d && systemctl daemon-reload")
	g.sh("apt purge -y " + Name)
	if code, _ := g.run("systemctl is-active --quiet " + Name); code == 0 {
		t.Error("the daemon still runs after purge")
	}
	if code, out := g.run("getent passwd " + User + "; getent group " + User); code == 0 {
		t.Errorf("the service user or group outlived the purge:\n%s", out)
	}
	after := g.snapshot()
	if d := diffLines(before, after); d != "" {
		t.Errorf("the system after purge differs from before install (- before, + after):\n%s", d)
	}
	step("purge")
	t.Logf("done after %s", time.Since(start).Round(time.Second))
}

// noDependencies: the .deb depends on nothing, so apt installs it from the
// file alone on any Debian.
func noDependencies(t *testing.T, deb string) {
	t.Helper()
	out, err := exec.Command("dpkg-deb", "-f", deb, "Depends", "Pre-Depends").CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb -f %s: %v\n%s", deb, err, out)
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		t.Errorf("the .deb declares dependencies, which apt would have to fetch: %s", s)
	}
}

func buildAgent(t *testing.T, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "iofog-vm-agent")
	cmd := exec.Command(goTool(), "build", "-trimpath", "-o", out, "./packaging/internal/vmagent")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./packaging/internal/vmagent: %v\n%s", err, b)
	}
	return out
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}

// guest is the booted Debian system, driven through the test agent.
type guest struct {
	t   *testing.T
	vm  *qemu.VM
	url string
}

func bootGuest(ctx context.Context, t *testing.T, disk string, boot *qemu.Boot) *guest {
	t.Helper()
	guestPorts := []int{agentPort, 8080, 443}
	for p := 6000; p <= 6050; p++ {
		guestPorts = append(guestPorts, p)
	}
	// Host ports chosen together, each held until all are, so no two
	// forwards get the same one.
	var fwd []qemu.Forward
	var held []net.Listener
	for _, p := range guestPorts {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("finding free loopback ports to forward: %v", err)
		}
		held = append(held, ln)
		fwd = append(fwd, qemu.Forward{Guest: p, Host: ln.Addr().(*net.TCPAddr).Port})
	}
	for _, ln := range held { // free for QEMU to take
		ln.Close()
	}
	vm, err := qemu.Start(ctx, qemu.Options{
		Board: "x86_64", Image: disk, Mode: qemu.Direct, Boot: boot, Forward: fwd,
		MemoryMB: 1024, Console: consoleLog(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vm.Stop)
	// Guards against a hung boot, not speed checks: TCG on a busy machine.
	if _, err := vm.WaitFor(ctx, regexp.MustCompile(`iofog-vm-agent: listening`), 15*time.Minute); err != nil {
		t.Fatalf("booting Debian: %v", err)
	}
	g := &guest{t: t, vm: vm, url: "http://" + vm.Addr(agentPort)}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if code, _ := g.tryWithin("true", 5*time.Second); code == 0 {
			return g
		}
		if time.Now().After(deadline) {
			t.Fatal("the test agent in the guest said it listens, but does not answer through the forwarded port")
		}
		time.Sleep(time.Second)
	}
}

// reboot reboots the guest as a user would and returns it booted again
// (QEMU runs with -no-reboot, so the reboot ends it and a new one boots the
// same disk).
func (g *guest) reboot(ctx context.Context, disk string, boot *qemu.Boot) *guest {
	g.t.Helper()
	g.tryWithin("systemctl --no-block reboot", 30*time.Second)
	if err := g.vm.Wait(10 * time.Minute); err != nil {
		g.t.Fatalf("rebooting: %v", err)
	}
	return bootGuest(ctx, g.t, disk, boot)
}

// try runs a shell script in the guest and returns its exit status and
// output; -1 when the agent could not be reached.
func (g *guest) try(script string) (int, string) {
	return g.tryWithin(script, 10*time.Minute)
}

// tryWithin is try with a limit on the whole exchange: a guest whose
// network is not up yet holds a forwarded connection open unanswered.
func (g *guest) tryWithin(script string, limit time.Duration) (int, string) {
	began := time.Now()
	defer func() {
		if d := time.Since(began); d > 10*time.Second {
			g.t.Logf("guest: %s: %s", script, d.Round(time.Second))
		}
	}()
	client := &http.Client{Timeout: limit + 30*time.Second}
	resp, err := client.Post(fmt.Sprintf("%s/run?timeout=%d", g.url, int(limit.Seconds())), "text/plain", strings.NewReader(script))
	if err != nil {
		return -1, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var res struct {
		Exit   int    `json:"exit"`
		Output string `json:"output"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &res) != nil {
		return -1, fmt.Sprintf("agent: %s: %s", resp.Status, body)
	}
	return res.Exit, res.Output
}

func (g *guest) run(script string) (int, string) {
	g.t.Helper()
	code, out := g.try(script)
	if code < 0 {
		g.t.Fatalf("guest: %s: %s", script, out)
	}
	return code, out
}

// sh runs script in the guest and fails the test unless it succeeds.
func (g *guest) sh(script string) string {
	g.t.Helper()
	code, out := g.run(script)
	if code != 0 {
		_, journal := g.try("journalctl -u " + Name + " --no-pager -n 40 -o cat")
		g.t.Fatalf("guest: %s: exit %d\n%s\n--- journalctl -u %s (tail) ---\n%s", script, code, out, Name, journal)
	}
	return out
}

// out is sh's output without surrounding space.
func (g *guest) out(script string) string {
	g.t.Helper()
	_, out := g.run(script)
	return strings.TrimSpace(out)
}

func (g *guest) put(src, dst string, mode os.FileMode) {
	g.t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		g.t.Fatal(err)
	}
	g.putData(data, dst, mode)
}

func (g *guest) putData(data []byte, dst string, mode os.FileMode) {
	g.t.Helper()
	req, _ := http.NewRequest("PUT", g.url+"/file?"+url.Values{"path": {dst}, "mode": {fmt.Sprintf("%o", mode)}}.Encode(), bytes.NewReader(data))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatalf("copying %s into the guest: %v", dst, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		g.t.Fatalf("copying %s into the guest: %s: %s", dst, resp.Status, b)
	}
}

// write replaces a file's content as an editor would (same inode, owner
// and mode kept).
func (g *guest) write(path, content string) {
	g.t.Helper()
	g.putData([]byte(content), "/root/edit.tmp", 0o600)
	g.sh("cat /root/edit.tmp > " + path + " && rm /root/edit.tmp")
}

func (g *guest) dial(port int) (net.Conn, error) {
	return net.DialTimeout("tcp", g.vm.Addr(port), 10*time.Second)
}

// waitActive waits until systemd says the service is active with a main
// process other than old, and the daemon itself answers `status`.
func (g *guest) waitActive(old int) int {
	g.t.Helper()
	deadline := time.Now().Add(3 * time.Minute) // a hang guard
	var last string
	for time.Now().Before(deadline) {
		_, last = g.run("systemctl is-active " + Name + "; systemctl show -p MainPID --value " + Name + "; " + BinaryPath + " status 2>&1")
		f := strings.Fields(last)
		if len(f) >= 2 && f[0] == "active" && strings.Contains(last, "iofog-connector is up and running.") {
			if pid, _ := strconv.Atoi(f[1]); pid > 0 && pid != old {
				return pid
			}
		}
		time.Sleep(time.Second)
	}
	_, journal := g.try("systemctl status --no-pager " + Name + "; journalctl -u " + Name + " --no-pager -n 40 -o cat")
	g.t.Fatalf("the service did not come up (with a main pid other than %d):\n%s\n%s", old, last, journal)
	return 0
}

// agree checks `service status` and systemctl say the same thing.
func (g *guest) agree(running bool) {
	g.t.Helper()
	svc, out := g.run("service " + Name + " status")
	sysd, _ := g.run("systemctl is-active --quiet " + Name)
	if (svc == 0) != running || (sysd == 0) != running {
		g.t.Errorf("want running=%v: `service %s status` exit %d, `systemctl is-active` exit %d\n%s", running, Name, svc, sysd, out)
	}
}

// checkProcess: the service user, no new privileges, CAP_NET_BIND_SERVICE
// the only capability (CAP_NET_ADMIN too with the firewall drop-in).
func (g *guest) checkProcess(pid int) {
	g.t.Helper()
	status := g.sh(fmt.Sprintf("cat /proc/%d/status", pid))
	uid := g.out("id -u " + User)
	if exe := g.out(fmt.Sprintf("readlink /proc/%d/exe", pid)); exe != BinaryPath {
		g.t.Errorf("daemon pid %d runs %q, want %s", pid, exe, BinaryPath)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(status, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	if u := strings.Fields(fields["Uid"]); len(u) != 4 || u[0] != uid || u[1] != uid || u[2] != uid || uid == "0" || uid == "" {
		g.t.Errorf("daemon Uid %q, want %s's uid %q", fields["Uid"], User, uid)
	}
	want := "0000000000000400"
	if code, _ := g.run("test -e /etc/systemd/system/iofog-connector.service.d/firewall.conf"); code == 0 {
		want = "0000000000001400"
	}
	for _, k := range []string{"CapEff", "CapPrm", "CapBnd"} {
		if fields[k] != want {
			g.t.Errorf("daemon %s = %s, want %s", k, fields[k], want)
		}
	}
	if fields["NoNewPrivs"] != "1" {
		g.t.Errorf("daemon NoNewPrivs = %q, want 1", fields["NoNewPrivs"])
	}
}

// apiTimeout bounds each API call to the guest: it answers within it
// unless it is hung.
const apiTimeout = 30 * time.Second

func (g *guest) addMapping(api *controlapi.Client, r controlapi.AddRequest) mapping {
	g.t.Helper()
	a, err := api.Add(context.Background(), r)
	if err != nil {
		g.t.Fatalf("mapping/add %s: %v", r.MappingJSON(), err)
	}
	m := mapping{Status: a.Status, ID: a.ID, Port1: int(a.Port1), Port2: int(a.Port2), Pass1: a.Passcode1, Public: !r.Private}
	if m.Status != "ok" || m.ID == "" || m.Port1 < 6000 || m.Port2 > 6050 || m.Port1 == m.Port2 {
		g.t.Fatalf("mapping/add %s: %+v", r.MappingJSON(), m)
	}
	return m
}

// checkMappings: the daemon has exactly these mappings, each with its ports
// listening.
func (g *guest) checkMappings(api *controlapi.Client, maps []mapping) {
	g.t.Helper()
	st, err := api.Status(context.Background())
	if err != nil {
		g.t.Fatalf("status through %s: %v", api.Base, err)
	}
	if st.Status != "running" || st.Mappings != len(maps) {
		g.t.Errorf("status: %+v, want running with %d mappings", st, len(maps))
	}
	listening := g.out("cat /proc/net/tcp /proc/net/tcp6")
	for _, m := range maps {
		for _, p := range []int{m.Port1, m.Port2} {
			if !strings.Contains(listening, fmt.Sprintf(":%04X 00000000", p)) && !strings.Contains(listening, fmt.Sprintf(":%04X 00000000000000000000000000000000", p)) {
				g.t.Errorf("mapping %s: nothing listens on port %d", m.ID, p)
			}
		}
	}
}

// checkTable: the Connector's nftables table exists and names every
// mapping port.
func (g *guest) checkTable(maps []mapping) {
	g.t.Helper()
	code, out := g.run("nft list table inet iofog")
	if code != 0 {
		g.t.Errorf("no firewall table with the drop-in in place: nft list table inet iofog:\n%s", out)
		return
	}
	for _, m := range maps {
		for _, p := range []int{m.Port1, m.Port2} {
			if !portInRuleset(out, p) {
				g.t.Errorf("firewall table does not open mapping port %d:\n%s", p, out)
			}
		}
	}
}

// portInRuleset reports whether nft's listing names port p, alone or in a
// range a-b.
func portInRuleset(ruleset string, p int) bool {
	for _, m := range regexp.MustCompile(`\b(\d+)(?:-(\d+))?\b`).FindAllStringSubmatch(ruleset, -1) {
		lo, _ := strconv.Atoi(m[1])
		hi := lo
		if m[2] != "" {
			hi, _ = strconv.Atoi(m[2])
		}
		if lo <= p && p <= hi {
			return true
		}
	}
	return false
}

func (g *guest) checkExposure() {
	g.t.Helper()
	out := g.sh("systemd-analyze security --no-pager " + Name)
	m := regexp.MustCompile(`Overall exposure level for iofog-connector\.service: ([0-9.]+)`).FindStringSubmatch(out)
	if m == nil {
		g.t.Errorf("systemd-analyze security printed no exposure level:\n%s", out)
		return
	}
	g.t.Logf("systemd-analyze security: exposure %s", m[1])
	if v, _ := strconv.ParseFloat(m[1], 64); v > maxExposure {
		g.t.Errorf("systemd-analyze security exposure %s, worse than %.1f:\n%s", m[1], maxExposure, out)
	}
}

// snapshot lists the guest's files (type, mode, owner) and the content of
// every file in /etc, leaving out what the system itself changes as it runs
// (logs, caches, apt's and dpkg's own records, the journal).
func (g *guest) snapshot() string {
	g.t.Helper()
	return g.sh(`find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp -o -path /var/tmp ` +
		`-o -path /var/log/journal -o -path /var/log/apt -o -path /var/cache -o -path /var/lib/apt -o -path /var/lib/dpkg ` +
		`-o -path /var/lib/systemd -o -path /root -o -path /lost+found \) -prune ` +
		`-o ! -path /var/log/dpkg.log ! -path /var/log/alternatives.log ! -path /var/log/wtmp ! -path /var/log/btmp ! -path /var/log/lastlog ` +
		`-printf '%p %y %m %u:%g\n' | sort; find /etc -xdev -type f ! -name '*-' -exec md5sum {} + | sort -k2`)
}

// diffLines lists lines only in a (-) or only in b (+).
func diffLines(a, b string) string {
	count := map[string]int{}
	for _, l := range strings.Split(a, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(b, "\n") {
		count[l]--
	}
	var d []string
	for _, l := range strings.Split(a, "\n") {
		if count[l] > 0 {
			d = append(d, "- "+l)
			count[l] = 0
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if count[l] < 0 {
			d = append(d, "+ "+l)
			count[l] = 0
		}
	}
	return strings.Join(d, "\n")
}

// logWriter passes a program's progress to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

// consoleLog writes the guest's serial console to the test log, line by
// line, with -v (failure messages carry its end anyway).
func consoleLog(t *testing.T) io.Writer {
	var mu sync.Mutex
	var line []byte
	return writerFunc(func(p []byte) (int, error) {
		if !testing.Verbose() {
			return len(p), nil
		}
		mu.Lock()
		defer mu.Unlock()
		line = append(line, p...)
		for {
			i := bytes.IndexByte(line, '\n')
			if i < 0 {
				return len(p), nil
			}
			t.Logf("console: %s", bytes.TrimRight(line[:i], "\r"))
			line = line[i+1:]
		}
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
