package qemu

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/controlapi"
	"github.com/eclipse-iofog/iofog-connector/image"
	"github.com/eclipse-iofog/iofog-connector/internal/testpeer"
	"github.com/eclipse-iofog/iofog-connector/relay/agentclient"
	"github.com/eclipse-iofog/iofog-connector/schema"
)

// The config the boot tests put on the image with `mkimage config`
// (image.RewriteConfig): a different API port and pool than the image's
// default, so an answer there proves the rewritten config is the one used.
const bootTestConfig = `ports: ["6000-6003"]
exclude: []
broker: 12345
address: "127.0.0.1"
dev: true
api: http_port: 8081
`

// TestApplianceBoots boots each board's real image (the real binary as PID
// 1, not a test init), once per board: the config written by mkimage config
// must be the one in use, the API must answer through hostfwd, a public
// mapping must carry a client's bytes to a microservice through an agent,
// and "commandline stop" must power the VM off.
//
// With restrict=on the guest cannot dial out, so the agent runs on the host
// and dials in through hostfwd; the microservice is on the host's loopback.
func TestApplianceBoots(t *testing.T) {
	for _, c := range []struct{ board, goarch string }{{"x86_64", "amd64"}, {"rpi", "arm64"}} {
		t.Run(c.board, func(t *testing.T) {
			t.Parallel()
			boardT := t // the VM after the power cut outlives that subtest
			cache := requireQEMU(t, c.board)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			dir := t.TempDir()
			bin, err := image.BuildBinary(ctx, c.goarch, dir)
			if err != nil {
				t.Fatal(err)
			}
			res := buildImage(t, image.Options{Board: c.board, Out: filepath.Join(dir, "appliance.img"), Binary: bin, CacheDir: cache})
			cfg := filepath.Join(dir, "connector.cue")
			if err := os.WriteFile(cfg, []byte(bootTestConfig), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err = image.RewriteConfig(ctx, res.Image, cfg, func(name string, data []byte) error {
				_, err := schema.LoadBytes(name, data)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}

			fwd := []Forward{{Guest: 8081}}
			for p := 6000; p <= 6003; p++ {
				fwd = append(fwd, Forward{Guest: p})
			}
			vm, err := Start(ctx, Options{Board: c.board, Image: res.Image, CacheDir: cache, Forward: fwd, Console: newTestLog(t)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(vm.Stop)
			api := apiClient(vm)

			// Up: the API answers on the rewritten config's port.
			start := time.Now()
			status := waitAPI(ctx, t, vm, api, 5*time.Minute)
			// For the record (go test -v), not a check: machines are noisy.
			t.Logf("%s: QEMU start to the API answering: %s", c.board, time.Since(start).Round(100*time.Millisecond))
			if status.Status != "running" {
				t.Fatalf("status: %+v; want \"status\":\"running\"", status)
			}

			t.Run("public mapping carries traffic", func(t *testing.T) {
				publicMapping(ctx, t, vm, api)
			})

			// The plug is pulled (SIGKILL of QEMU) right after the
			// mapping was acknowledged: the next boot of the same card has
			// it, on the same ports.
			t.Run("survives a power cut", func(t *testing.T) {
				before, err := list(ctx, api)
				if err != nil {
					t.Fatal(err)
				}
				vm.Stop()
				vm, err = Start(ctx, Options{Board: c.board, Image: res.Image, CacheDir: cache, Forward: fwd, Console: newTestLog(t)})
				if err != nil {
					t.Fatal(err)
				}
				boardT.Cleanup(vm.Stop)
				api = apiClient(vm)
				waitAPI(ctx, t, vm, api, 5*time.Minute)
				after, err := list(ctx, api)
				if err != nil {
					t.Fatal(err)
				}
				if b, a := mappingPorts(before), mappingPorts(after); len(b) != 1 || fmt.Sprint(a) != fmt.Sprint(b) {
					t.Fatalf("mappings before the cut %v, after %v", b, a)
				}
			})

			t.Run("commandline stop powers off", func(t *testing.T) {
				if _, err := command(ctx, api, "stop"); err != nil {
					t.Fatal(err)
				}
				if err := vm.Wait(3 * time.Minute); err != nil {
					t.Fatalf("after commandline stop: %v", err)
				}
				// What a laptop's checkers say of the card afterwards.
				for _, label := range []string{image.Label, image.DataLabel} {
					if out, err := image.CheckPartition(res.Image, label); err != nil {
						t.Errorf("%s: %v\n%s", label, err, out)
					}
				}
			})
		})
	}
}

// mappingPorts lists a mapping/list answer as "id:port1/port2" strings.
func mappingPorts(list controlapi.ListReply) []string {
	var out []string
	for _, m := range list.Mappings {
		out = append(out, fmt.Sprintf("%s:%d/%d", m.ID, m.Port1, m.Port2))
	}
	return out
}

func publicMapping(ctx context.Context, t *testing.T, vm *VM, api *controlapi.Client) {
	actx, acancel := context.WithTimeout(ctx, apiTimeout)
	m, err := api.Add(actx, controlapi.Public(1, 60000))
	acancel()
	if err != nil {
		t.Fatal(err)
	}
	port1, port2 := int(m.Port1), int(m.Port2)
	if vm.HostPort(port1) == 0 || vm.HostPort(port2) == 0 {
		t.Fatalf("mapping got ports %d/%d, outside the configured pool 6000-6003: %+v", port1, port2, m)
	}

	// The microservice: answers each line with "echo: " and the line.
	svc := testpeer.Listen(t, func(c net.Conn) {
		line, _ := bufio.NewReader(c).ReadString('\n')
		fmt.Fprintf(c, "echo: %s", line)
	})

	agent, err := agentclient.New(agentclient.Config{
		Mode: "public", Host: "127.0.0.1", Port: vm.HostPort(port1), Passcode: m.Passcode1, ConnectionCount: 1,
		LocalHost: "127.0.0.1", LocalPort: svc, DevMode: true,
	}, agentclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	actx, stop := context.WithCancel(ctx)
	defer stop()
	go agent.Run(actx)
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer wcancel()
	if err := agent.WaitAuthorized(wctx, 1); err != nil {
		t.Fatalf("agent not authorized on port %d (host %d): %v; stats %+v", port1, vm.HostPort(port1), err, agent.Stats())
	}

	c, err := net.DialTimeout("tcp", vm.Addr(port2), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	fmt.Fprintf(c, "hello through the appliance\n")
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != "echo: hello through the appliance\n" {
		t.Fatalf("public client got %q, %v; want the microservice's echo", got, err)
	}
}

// apiTimeout bounds each API call: the guest answers within it unless it
// is hung.
const apiTimeout = 20 * time.Second

// apiClient is the control-API client for the appliance's API, reached
// through hostfwd on the boot tests' port.
func apiClient(vm *VM) *controlapi.Client {
	return controlapi.New("http://"+vm.Addr(8081), &http.Client{Timeout: apiTimeout})
}

// waitAPI polls status until the API answers (the guest is booting;
// hostfwd resets connections until something listens), QEMU exits, or
// timeout passes.
func waitAPI(ctx context.Context, t *testing.T, vm *VM, api *controlapi.Client, timeout time.Duration) controlapi.StatusReply {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-vm.Done():
			t.Fatalf("QEMU exited before the API answered at %s (is the appliance PID 1 in place?): %v\nconsole ends:\n%s", api.Base, vm.Wait(0), vm.tail(60))
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(time.Second):
		}
		actx, cancel := context.WithTimeout(ctx, apiTimeout)
		st, err := api.Status(actx)
		cancel()
		if err == nil {
			return st
		}
		last = err
	}
	t.Fatalf("the API did not answer at %s within %s (last: %v)\nconsole ends:\n%s", api.Base, timeout, last, vm.tail(60))
	return controlapi.StatusReply{}
}

func list(ctx context.Context, api *controlapi.Client) (controlapi.ListReply, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	return api.List(ctx)
}

func command(ctx context.Context, api *controlapi.Client, cmd string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	return api.Command(ctx, cmd)
}
