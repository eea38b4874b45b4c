package qemu

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Raspi4 boots the Pi image on QEMU 10's raspi4b machine, with the
// kernel, initrd and Pi 4 device tree taken out of the image (QEMU does not
// run the Pi's firmware) and the image as the SD card. The system's QEMU 7.2
// has no raspi4b: this mode runs the QEMU 10 that
// scripts/fetch-qemu-raspi4.sh unpacks into the cache.
const Raspi4 Mode = 100

// Raspi4QEMU returns the QEMU 10 binary in the cache and the environment
// it needs to find its own modules instead of the system QEMU's.
func Raspi4QEMU(cacheDir string) (string, []string, error) {
	root := filepath.Join(cacheDir, "qemu10", "root")
	bin := filepath.Join(root, "usr", "bin", "qemu-system-aarch64")
	if _, err := os.Stat(bin); err != nil {
		return "", nil, fmt.Errorf("no QEMU with raspi4b in the cache (%w): run scripts/fetch-qemu-raspi4.sh %s (make fetch does)", err, cacheDir)
	}
	return bin, []string{"QEMU_MODULE_DIR=" + filepath.Join(root, "usr", "lib", "x86_64-linux-gnu", "qemu")}, nil
}

// raspi4Disabled are the device-tree nodes of devices QEMU's raspi4b does
// not model; left on, the kernel panics or waits on them.
var raspi4Disabled = []string{
	"/soc/interrupt-controller@7ef00100", "/soc/i2c@7ef04500", "/soc/i2c@7ef09500",
	"/soc/hdmi@7ef00700", "/soc/hdmi@7ef05700", "/soc/hvs@7e400000",
	"/soc/pixelvalve@7e206000", "/soc/pixelvalve@7e207000", "/soc/pixelvalve@7e20a000",
	"/soc/pixelvalve@7e216000", "/soc/pixelvalve@7ec12000", "/soc/vec@7ec13000",
	"/soc/dsi@7e209000", "/soc/dsi@7e700000", "/gpu", "/scb/gpu@7ec00000",
	"/scb/pcie@7d500000", "/scb/ethernet@7d580000", "/soc/rng@7e104000",
	"/emmc2bus/mmc@7e340000",
}

// raspi4DTB patches the Pi 4 device tree for QEMU with fdtput
// (device-tree-compiler): QEMU wires the SD card to the Arasan SDHCI at
// 0x7e300000, which the real board uses for Wi-Fi (non-removable, powered
// through the firmware's GPIO expander that QEMU does not model), so that
// controller loses its Wi-Fi setup and emmc2 goes off.
func raspi4DTB(path string) error {
	fdtput, err := exec.LookPath("fdtput")
	if err != nil {
		return fmt.Errorf("fdtput not found: apt-get install device-tree-compiler")
	}
	var cmds [][]string
	for _, n := range raspi4Disabled {
		cmds = append(cmds, []string{"-t", "s", path, n, "status", "disabled"})
	}
	cmds = append(cmds,
		[]string{"-d", path, "/soc/mmc@7e300000", "mmc-pwrseq"},
		[]string{"-d", path, "/soc/mmc@7e300000", "non-removable"},
		[]string{"-r", path, "/soc/mmc@7e300000/wifi@1"},
	)
	for _, c := range cmds {
		if out, err := exec.Command(fdtput, c...).CombinedOutput(); err != nil {
			return fmt.Errorf("fdtput %s: %w: %s", strings.Join(c, " "), err, out)
		}
	}
	return nil
}
