package qemu

import (
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/image"
	"github.com/eclipse-iofog/iofog-connector/internal/testenv"
)

// TestPi4Boots boots the real Pi image on QEMU 10's raspi4b (kernel,
// initrd and Pi 4 device tree from the image, the image as the SD card):
// PID 1 runs, finds the boot and data partitions on the card, reads the
// config, and writes STATUS.txt, checked on the console and on the card.
// raspi4b has no Ethernet model, so nothing goes over the network.
func TestPi4Boots(t *testing.T) {
	cache := testenv.RequireQEMU(t, func() (string, error) {
		cache, err := Ready("rpi")
		if err != nil {
			return "", err
		}
		if _, _, err := Raspi4QEMU(cache); err != nil {
			return "", err
		}
		if _, err := exec.LookPath("fdtput"); err != nil {
			return "", err
		}
		return cache, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin, err := image.BuildBinary(ctx, "arm64", dir)
	if err != nil {
		t.Fatal(err)
	}
	res := buildImage(t, image.Options{Board: "rpi", Out: filepath.Join(dir, "pi.img"), Binary: bin, CacheDir: cache})
	vm, err := Start(ctx, Options{Board: "rpi", Image: res.Image, Mode: Raspi4, CacheDir: cache, Console: newTestLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vm.Stop)
	for _, re := range []string{
		`boot partition mounted read-only.*device=/dev/mmcblk\d+p1`,
		`data partition mounted.*device=/dev/mmcblk\d+p2`,
		`status\| Config: +connector\.cue: OK`,
		`status\| +slot A: \S+ \(running, committed\)`,
		`Connector is up.*`,
	} {
		if _, err := vm.WaitFor(ctx, regexp.MustCompile(re), 4*time.Minute); err != nil {
			t.Fatalf("%v\nconsole:\n%s", err, vm.Console())
		}
	}
	// The status block reaches STATUS.txt in a synchronous write: it is on
	// the card even when the power goes now.
	vm.Stop()
	status, err := image.ReadBootFile(res.Image, "STATUS.txt")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Config:       connector.cue: OK", "Boot device:  /dev/mmcblk"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("STATUS.txt lacks %q:\n%s", want, status)
		}
	}
}
