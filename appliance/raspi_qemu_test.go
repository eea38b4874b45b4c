package appliance_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/controlapi"
	"github.com/eclipse-iofog/iofog-connector/image"
	"github.com/eclipse-iofog/iofog-connector/internal/testenv"
	"github.com/eclipse-iofog/iofog-connector/internal/testpeer"
	"github.com/eclipse-iofog/iofog-connector/qemu"
	"github.com/eclipse-iofog/iofog-connector/schema"
)

// piConfig is what the Pi test puts on the card with `mkimage config`
// (image.RewriteConfig): another API port and pool than the image's
// default, so an answer there proves the rewritten config is the one used.
const piConfig = `ports: ["6000-6003"]
exclude: []
broker: 12345
address: "127.0.0.1"
dev: true
api: http_port: 8081
`

// piBootTimeout guards a boot of the emulated Pi, slower than the x86
// machine under TCG; a guard against a hung VM, not a performance check.
const piBootTimeout = 5 * time.Minute

// TestApplianceBootsOnRaspberryPi boots the real Pi image (the arm64
// binary as PID 1) on QEMU's raspi3b. The x86 image's same steps are in
// TestApplianceBootsInQEMU and TestPowerCut. The config written by mkimage
// config must be the one in use, a public mapping must carry a client's
// bytes to a microservice through an agent, the mapping must survive the
// plug being pulled, and "commandline stop" must power off leaving the
// card's file systems clean.
//
// With restrict=on the guest cannot dial out, so the agent runs on the host
// and dials in through hostfwd; the microservice is on the host's loopback.
func TestApplianceBootsOnRaspberryPi(t *testing.T) {
	cache := testenv.RequireQEMU(t, func() (string, error) { return qemu.Ready("rpi") })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin, err := image.BuildBinary(ctx, "arm64", dir)
	if err != nil {
		t.Fatal(err)
	}
	res, err := image.Build(ctx, image.Options{Board: "rpi", Out: filepath.Join(dir, "appliance.img"), Binary: bin, CacheDir: cache})
	if err != nil {
		t.Fatalf("building the image: %v", err)
	}
	cfg := filepath.Join(dir, "connector.cue")
	if err := os.WriteFile(cfg, []byte(piConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := image.RewriteConfig(ctx, res.Image, cfg, validConfig); err != nil {
		t.Fatal(err)
	}

	fwd := []qemu.Forward{{Guest: 8081}}
	for p := 6000; p <= 6003; p++ {
		fwd = append(fwd, qemu.Forward{Guest: p})
	}
	// A VM belongs to the whole test: the one booted after the power cut
	// outlives the subtest that boots it.
	parent := t
	start := func(t *testing.T) *qemu.VM {
		t.Helper()
		vm, err := qemu.Start(ctx, qemu.Options{Board: "rpi", Image: res.Image, CacheDir: cache, Forward: fwd, Console: &consoleLog{t: parent}})
		if err != nil {
			t.Fatal(err)
		}
		parent.Cleanup(vm.Stop)
		return vm
	}
	vm := start(t)
	api := "http://" + vm.Addr(8081)

	// Up: the API answers on the rewritten config's port.
	begin := time.Now()
	waitConsole(ctx, t, vm, 0, `Connector is up.*`, piBootTimeout)
	// For the record (go test -v), not a check: machines are noisy.
	t.Logf("QEMU start to the Connector up: %s", time.Since(begin).Round(100*time.Millisecond))
	if st := status(t, api); st.Status != "running" {
		t.Fatalf("status: %+v; want \"status\":\"running\"", st)
	}

	t.Run("public mapping carries traffic", func(t *testing.T) {
		m, err := control(api).Add(ctx, controlapi.Public(1, 60000))
		if err != nil {
			t.Fatal(err)
		}
		port1, port2 := int(m.Port1), int(m.Port2)
		if vm.HostPort(port1) == 0 || vm.HostPort(port2) == 0 {
			t.Fatalf("mapping got ports %d/%d, outside the configured pool 6000-6003: %+v", port1, port2, m)
		}
		// The microservice answers each line with "echo: " and the line,
		// so the answer cannot be the client's own bytes bounced back.
		svc := testpeer.Listen(t, func(c net.Conn) {
			line, _ := bufio.NewReader(c).ReadString('\n')
			fmt.Fprintf(c, "echo: %s", line)
		})
		agent := startAgent(ctx, t, vm.HostPort(port1), m.Passcode1, svc)
		wctx, wcancel := context.WithTimeout(ctx, stepTimeout)
		defer wcancel()
		if err := agent.WaitAuthorized(wctx, 1); err != nil {
			t.Fatalf("agent not authorized on port %d (host %d): %v; stats %+v", port1, vm.HostPort(port1), err, agent.Stats())
		}
		c, err := net.DialTimeout("tcp", vm.Addr(port2), 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(stepTimeout))
		fmt.Fprintf(c, "hello through the appliance\n")
		got, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || got != "echo: hello through the appliance\n" {
			t.Fatalf("public client got %q, %v; want the microservice's echo", got, err)
		}
	})
	if t.Failed() {
		return
	}

	// The plug is pulled (SIGKILL of QEMU) right after the mapping was
	// acknowledged: the next boot of the same card has it, on the same
	// ports.
	t.Run("survives a power cut", func(t *testing.T) {
		before := listMappings(t, api)
		vm.Stop()
		vm = start(t)
		api = "http://" + vm.Addr(8081)
		waitConsole(ctx, t, vm, 0, `Connector is up.*`, piBootTimeout)
		after := listMappings(t, api)
		if len(before) != 1 || fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("mappings before the cut %v, after %v", before, after)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("commandline stop powers off", func(t *testing.T) {
		command(t, api, "stop")
		if err := vm.Wait(stepTimeout); err != nil {
			t.Fatalf("after commandline stop: %v", err)
		}
		// What a laptop's checkers say of the card afterwards.
		for _, label := range []string{image.Label, image.DataLabel} {
			if out, err := image.CheckPartition(res.Image, label); err != nil {
				t.Errorf("%s: %v\n%s", label, err, out)
			}
		}
	})
}

// validConfig refuses a config the Connector would not load, as
// `mkimage config` does before it writes one to a card.
func validConfig(name string, data []byte) error {
	_, err := schema.LoadBytes(name, data)
	return err
}
