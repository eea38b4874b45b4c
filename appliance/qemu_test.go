package appliance_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/appliance"
	"github.com/eclipse-iofog/iofog-connector/controlapi"
	"github.com/eclipse-iofog/iofog-connector/image"
	"github.com/eclipse-iofog/iofog-connector/internal/testenv"
	"github.com/eclipse-iofog/iofog-connector/internal/testpeer"
	"github.com/eclipse-iofog/iofog-connector/qemu"
	"github.com/eclipse-iofog/iofog-connector/relay/agentclient"
)

// badConfig has two mistakes, on lines 5 and 6; the appliance must boot on
// the built-in default (dev mode, API on 8080, ports 6000-6050) and say so.
const badConfig = `ports:   ["6000-6010"]
exclude: []
broker:  12345
address: "127.0.0.1"
dev:     "yes"
hostname: "-not-a-name-"
`

// Generous guards against a hung VM, never performance checks: boots are
// emulated (TCG) on shared cores.
const (
	bootTimeout = 4 * time.Minute
	stepTimeout = 2 * time.Minute
)

// TestApplianceBootsInQEMU boots the real x86_64 image (kernel, initramfs,
// our binary as /init, a FAT boot partition) twice from the same disk and
// checks what a user relies on. One boot serves several assertions, to keep
// emulated boots few.
func TestApplianceBootsInQEMU(t *testing.T) {
	cache := requireQEMU(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	bin, err := image.BuildBinary(ctx, "amd64", dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "connector.cue")
	if err := os.WriteFile(cfg, []byte(badConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := image.Build(ctx, image.Options{Board: "x86_64", Out: filepath.Join(dir, "appliance.img"),
		Binary: bin, Config: cfg, CacheDir: cache})
	if err != nil {
		t.Fatalf("building the image: %v", err)
	}

	// A microservice on the host for the agent to reach, and the agent.
	echo := testpeer.Echoing(t)
	var agent *agentclient.Client
	var port1, port2 int
	// Guest ports reachable from the host: the API and the first mapping's
	// two ports (the lowest of the default pool). The second boot reuses
	// the host ports, so the agent keeps dialling the same address.
	forwards := []qemu.Forward{{Guest: 8080}, {Guest: 6000}, {Guest: 6001}}

	parent := t
	t.Run("first boot", func(t *testing.T) {
		vm, typeLine := boot(ctx, t, res.Image, cache, forwards)
		for i := range forwards {
			forwards[i].Host = vm.HostPort(forwards[i].Guest)
		}
		start := time.Now()
		up := waitConsole(ctx, t, vm, 0, `Connector is up.*`, bootTimeout)
		t.Logf("first boot: Connector API up %s after QEMU started (%s)", time.Since(start).Round(100*time.Millisecond), up)
		api := "http://" + vm.Addr(8080)

		// The bad config is reported, and the default runs.
		st := status(t, api)
		if st.Status != "running" || st.Mappings != 0 {
			t.Fatalf("status on first boot: %+v", st)
		}

		// A public mapping carries traffic from a host-side public client
		// through the appliance to the agent's microservice and back.
		add := addMapping(t, api)
		port1, port2 = add.Port1, add.Port2
		if port1 != 6000 || port2 != 6001 {
			t.Fatalf("mapping got ports %d/%d; the test forwards 6000/6001 (the lowest of the default pool)", port1, port2)
		}
		// The agent outlives this boot (parent test's t): it keeps
		// redialling through the reboot, as a real one would.
		agent = startAgent(ctx, parent, vm.HostPort(port1), add.Pass1, echo)
		roundTrip(ctx, t, agent, vm.Addr(port2), "first boot")

		// Killing the Connector: PID 1 restarts it, the mapping is back on
		// the same ports and carries traffic again.
		off := len(vm.Console())
		typeLine("iofog-test kill-connector")
		waitConsole(ctx, t, vm, off, `iofog-test: kill-connector: killed pid \d+`, stepTimeout)
		waitConsole(ctx, t, vm, off, `Connector is up.*`, stepTimeout)
		if st = status(t, api); st.Mappings != 1 {
			t.Fatalf("after the restart the Connector has %v mappings, want 1", st.Mappings)
		}
		roundTrip(ctx, t, agent, vm.Addr(port2), "after the Connector was killed and restarted")

		// The status page, through the forwarded API port (statuspage_qemu_test.go).
		checkStatusPage(t, api, []string{add.Pass1}, "connector.cue: invalid", "connector.cue:5:", "connector.cue:6:",
			"10.0.2.15/24", "Firewall</dt><dd><span class=\"dot ok\" aria-hidden=\"true\"></span>on<", "restarted 1×", ">6000<", ">6001<", "Connector restarted: ")

		off = len(vm.Console())
		typeLine("iofog-test status")
		live := waitConsole(ctx, t, vm, off, `(?s)`+appliance.HookStatusBegin+`.*`+appliance.HookStatusEnd, stepTimeout)
		for _, want := range []string{"Restarts:     1", "Last restart:", "killed by signal 9", "running, 1 mapping(s)"} {
			if !strings.Contains(live, want) {
				t.Errorf("live status lacks %q:\n%s", want, live)
			}
		}

		// `commandline stop` powers the appliance off: QEMU exits by itself.
		command(t, api, "stop")
		if err := vm.Wait(stepTimeout); err != nil {
			t.Fatalf("after commandline stop: %v", err)
		}
		waitConsole(ctx, t, vm, 0, `goodbye.*power off`, time.Second)
		// What a laptop's checkers say of the card afterwards.
		for _, label := range []string{image.Label, image.ESPLabel, image.DataLabel} {
			if out, err := image.CheckPartition(res.Image, label); err != nil {
				t.Errorf("%s after commandline stop: %v\n%s", label, err, out)
			}
		}

		// STATUS.txt, as a person reads it after pulling the card.
		status, err := image.ReadBootFile(res.Image, appliance.StatusFile)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"connector.cue: INVALID, running on the built-in default",
			"- connector.cue:5:",
			"- connector.cue:6:",
			"API:          http://10.0.2.15:8080/api/v2/",
			"commandline stop",
		} {
			if !strings.Contains(string(status), want) {
				t.Errorf("STATUS.txt on the card lacks %q:\n%s", want, status)
			}
		}
	})
	if t.Failed() {
		return
	}

	// The user fixes the config on the card, in another format, and asks
	// for a log file on the card.
	good := filepath.Join(dir, "fixed.hcl")
	if err := os.WriteFile(good, []byte(fixedConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := image.RewriteConfig(ctx, res.Image, good, validConfig); err != nil {
		t.Fatal(err)
	}

	t.Run("reboot keeps mappings", func(t *testing.T) {
		// This boot has a hardware watchdog (QEMU's i6300esb; it resets the
		// machine 30 s after the last feed, which -no-reboot turns into
		// QEMU exiting).
		vm, _ := boot(ctx, t, res.Image, cache, forwards, "i6300esb")
		waitConsole(ctx, t, vm, 0, `Connector is up.*`, bootTimeout)
		waitConsole(ctx, t, vm, 0, `msg="feeding the hardware watchdog while the Connector is healthy"`, stepTimeout)
		armed := time.Now()
		api := "http://" + vm.Addr(8080)
		if st := status(t, api); st.Mappings != 1 {
			t.Fatalf("after a reboot the Connector has %v mappings, want the 1 from before", st.Mappings)
		}
		// The agent on the host has been redialling the same port meanwhile.
		roundTrip(ctx, t, agent, vm.Addr(port2), "after a reboot")

		// The appliance keeps feeding it while the Connector is healthy:
		// the machine is still up well past the watchdog's 30 s timeout.
		select {
		case <-vm.Done():
			t.Fatalf("the watchdog reset the machine although the Connector is healthy; console ends:\n%s", tail(vm.Console(), 20))
		case <-time.After(time.Until(armed.Add(40 * time.Second))):
		}
		status(t, api)

		// This time the power button ends it, as a user pressing it would:
		// PID 1 stops the Connector (SIGTERM, clean exit), flushes the card
		// and powers off, which ends QEMU by itself.
		waitConsole(ctx, t, vm, 0, `msg="power button watched"`, bootTimeout)
		off := len(vm.Console())
		if err := vm.PowerButton(); err != nil {
			t.Fatal(err)
		}
		if err := vm.Wait(stepTimeout); err != nil {
			t.Fatalf("after pressing the power button: %v", err)
		}
		waitConsole(ctx, t, vm, off, `power button`, time.Second)
		waitConsole(ctx, t, vm, off, `msg=stopped part=supervisor child=connector pid=\d+ how="exited with status 0"`, time.Second)
		waitConsole(ctx, t, vm, off, `msg=goodbye action="power off"`, time.Second)

		status, err := image.ReadBootFile(res.Image, appliance.StatusFile)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(status), "Config:       connector.hcl: OK\n") || strings.Contains(string(status), "problem(s)") {
			t.Errorf("STATUS.txt after fixing the config:\n%s", status)
		}
		if saved, err := image.ReadDataFile(res.Image, "state/last-good.hcl"); err != nil || string(saved) != fixedConfig {
			t.Errorf("state/last-good.hcl on the data partition = %q, %v; want the fixed config", saved, err)
		}
		logText, err := image.ReadDataFile(res.Image, appliance.LogFile)
		if err != nil {
			t.Fatalf("the config asks for a log file on the data partition: %v", err)
		}
		if len(logText) > 16<<10 {
			t.Errorf("log file is %d bytes, over its 16 KiB cap", len(logText))
		}
		for _, want := range []string{"iofog-connector is up and running", `msg="shutting down"`} {
			if !strings.Contains(string(logText), want) {
				t.Errorf("log file on the card lacks %q (PID 1's and the Connector's lines both belong there)", want)
			}
		}
	})
}

// fixedConfig is valid, HCL, and keeps a small log file on the card.
const fixedConfig = `ports   = ["6000-6050"]
exclude = []
broker  = 12345
address = "127.0.0.1"
dev     = true
log {
  file         = true
  max_size_kib = 16
}
`

// requireQEMU returns the kernel cache, or ends the test when QEMU or the
// cache is missing (testenv's rule).
func requireQEMU(t *testing.T) string {
	t.Helper()
	return testenv.RequireQEMU(t, func() (string, error) { return qemu.Ready("x86_64") })
}

// boot starts the image with test hooks on and returns the VM and a way to
// type a line on its serial console.
func boot(ctx context.Context, t *testing.T, img, cache string, fwd []qemu.Forward, devices ...string) (*qemu.VM, func(string)) {
	t.Helper()
	// The harness connects QEMU's stdin (the serial console's input) to
	// os.Stdin when Interactive is set; a pipe stands in for the keyboard
	// for as long as QEMU starts.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdin
	os.Stdin = r
	vm, err := qemu.Start(ctx, qemu.Options{
		Board: "x86_64", Image: img, Mode: qemu.Direct, CacheDir: cache,
		Forward: fwd, Console: &consoleLog{t: t}, Cmdline: "iofog.testhooks=1", Interactive: true,
		Devices: devices,
	})
	os.Stdin = saved
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close(); vm.Stop() })
	return vm, func(line string) {
		if _, err := io.WriteString(w, line+"\n"); err != nil {
			t.Fatalf("typing on the console: %v", err)
		}
	}
}

func waitConsole(ctx context.Context, t *testing.T, vm *qemu.VM, offset int, re string, timeout time.Duration) string {
	t.Helper()
	m, err := vm.WaitForAfter(ctx, offset, regexp.MustCompile(re), timeout)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// apiTimeout bounds each API call: the guest answers within it unless it
// is hung.
const apiTimeout = time.Minute

// control is the control-API client for the appliance's API at base.
func control(base string) *controlapi.Client {
	return controlapi.New(base, &http.Client{Timeout: apiTimeout})
}

// status asks for the Connector's state (mappingid=all), as installers and
// the Controller do.
func status(t *testing.T, api string) controlapi.StatusReply {
	t.Helper()
	st, err := control(api).Status(context.Background())
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

// command sends a commandline command and returns its response.
func command(t *testing.T, api, cmd string) string {
	t.Helper()
	out, err := control(api).Command(context.Background(), cmd)
	if err != nil {
		t.Fatalf("commandline %s: %v", cmd, err)
	}
	return out
}

func startAgent(ctx context.Context, t *testing.T, hostPort1 int, passcode string, local int) *agentclient.Client {
	t.Helper()
	c, err := agentclient.New(agentclient.Config{
		Mode: "public", Host: "127.0.0.1", Port: hostPort1, Passcode: passcode, ConnectionCount: 1,
		LocalHost: "127.0.0.1", LocalPort: local, HeartbeatFrequency: 20000, HeartbeatAbsenceThreshold: 200000, DevMode: true,
	}, agentclient.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RetryDelay: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	go c.Run(actx)
	return c
}

// roundTrip sends a line as a public client and expects it back through the
// agent and its microservice.
func roundTrip(ctx context.Context, t *testing.T, agent *agentclient.Client, public, when string) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	if err := agent.WaitAuthorized(wctx, 1); err != nil {
		t.Fatalf("%s: the agent did not get an authenticated connection: %v", when, err)
	}
	c, err := net.DialTimeout("tcp", public, 30*time.Second)
	if err != nil {
		t.Fatalf("%s: dialing the public port: %v", when, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(stepTimeout))
	msg := fmt.Sprintf("hello through the appliance, %s\n", when)
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != msg {
		t.Fatalf("%s: public client read %q, %v; want %q", when, got, err, msg)
	}
}

// consoleLog puts the serial console into the test log with -v, a line at
// a time (QEMU writes it in arbitrary pieces).
type consoleLog struct {
	t    *testing.T
	mu   sync.Mutex
	line []byte
}

func (l *consoleLog) Write(p []byte) (int, error) {
	if !testing.Verbose() {
		return len(p), nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.line = append(l.line, p...)
	for {
		i := bytes.IndexByte(l.line, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.t.Logf("console: %s", bytes.TrimRight(l.line[:i], "\r"))
		l.line = l.line[i+1:]
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
