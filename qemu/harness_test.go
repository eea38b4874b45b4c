package qemu

import (
	"bufio"
	"context"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/image"
)

// TestHarnessBoots boots each board's image with a minimal test init in
// place of the appliance: the image's kernel, initrd and modules must bring
// up the disk and the network, the hostfwd port must reach the guest, and a
// guest power-off must end QEMU. This checks the image builder, kmod in a
// real kernel, and the harness, independently of the appliance.
func TestHarnessBoots(t *testing.T) {
	for _, c := range []struct {
		board, goarch string
		mode          Mode
		configName    string
	}{
		{"x86_64", "amd64", Direct, "connector.cue"},
		{"x86_64", "amd64", UEFI, "connector.cue"},
		{"rpi", "arm64", Direct, "connector.cue"},
		{"rpi", "arm64", Virt, "connector.cue"},
	} {
		t.Run(c.board+"/"+c.mode.String(), func(t *testing.T) {
			t.Parallel()
			cache := requireQEMU(t, c.board)
			dir := t.TempDir()
			bin := goBuild(t, "./qemu/testdata/harnessinit", c.goarch, dir)
			res := buildImage(t, image.Options{Board: c.board, Out: dir + "/test.img", Binary: bin, CacheDir: cache})

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			vm, err := Start(ctx, Options{Board: c.board, Image: res.Image, Mode: c.mode, CacheDir: cache,
				Forward: []Forward{{Guest: 7000}}, Console: newTestLog(t)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(vm.Stop)
			start := time.Now()
			if _, err := vm.WaitFor(ctx, regexp.MustCompile(`HARNESS: (ready|error.*)`), 4*time.Minute); err != nil {
				t.Fatal(err)
			}
			// For the record (make test -v), not a check: machines are noisy.
			t.Logf("%s %s: booted to the test init's network in %s", c.board, c.mode, time.Since(start).Round(100*time.Millisecond))
			if m, _ := vm.WaitFor(ctx, regexp.MustCompile(`HARNESS: error.*`), 0); m != "" {
				t.Fatalf("guest: %s", m)
			}

			conn, err := net.DialTimeout("tcp", vm.Addr(7000), 30*time.Second)
			if err != nil {
				t.Fatalf("dialing the guest through hostfwd: %v", err)
			}
			conn.SetDeadline(time.Now().Add(time.Minute))
			report, err := bufio.NewReader(conn).ReadString('\n')
			if err != nil {
				t.Fatalf("reading from the guest: %v", err)
			}
			if !strings.Contains(report, c.configName) || !strings.Contains(report, "STATUS.txt") || !strings.Contains(report, "tls") {
				t.Errorf("IOFOG partition as the guest sees it: %q; want %s, STATUS.txt and tls", report, c.configName)
			}
			if strings.Contains(report, "modules=0 ") {
				t.Errorf("guest loaded no modules: %q", report)
			}
			conn.Write([]byte("poweroff\n"))
			conn.Close()
			if err := vm.Wait(2 * time.Minute); err != nil {
				t.Fatalf("QEMU did not exit cleanly after the guest powered off: %v", err)
			}
		})
	}
}
