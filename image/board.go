package image

import (
	"fmt"
	"slices"
	"strings"
)

// Board is what differs between the hardware the images are for.
type Board struct {
	Name    string // x86_64 or rpi, as on the mkimage command line
	GOARCH  string // the binary's architecture
	DebArch string // Debian's name for it, as in the cache
	// Modules are loaded at boot whatever the hardware, in this order (with
	// what they need first): the boot partition's file system and the
	// firewall.
	Modules []string
	// Drivers are carried for the hardware the board may have; the
	// appliance loads those whose aliases match a device in /sys (coldplug),
	// so a board does not spend boot time on drivers for absent hardware.
	Drivers []string
	// Optional modules are carried when the kernel has them.
	Optional []string
	// Cmdline is the kernel command line written into the image.
	Cmdline string
	// DiskSize is the image size in bytes (a power of two: QEMU's SD card
	// model insists on it, and it does no harm elsewhere).
	DiskSize int64
}

// Label is the FAT volume label of the boot partition; the appliance finds
// its boot partition by it.
const Label = "IOFOG"

// firewallModules are nf_tables and the expressions the appliance's
// firewall uses; the kernel would request them on demand, but carrying them
// means the ruleset goes in on the first try.
func firewallModules() []string {
	return []string{
		"nf_tables", "nf_conntrack", "nft_ct", "nft_limit", "nf_nat", "nft_nat", "nft_masq",
		"nft_chain_nat", "nft_reject", "nft_reject_inet", "nf_reject_ipv4", "nf_reject_ipv6",
	}
}

// firewallOptional are expressions some kernels build in.
func firewallOptional() []string { return []string{"nft_counter", "nft_log", "nft_fib_inet"} }

// fatModules let the kernel mount the boot partition: vfat will not mount
// without the code pages.
func fatModules() []string { return []string{"vfat", "nls_cp437", "nls_ascii", "nls_utf8"} }

// Panic behaviour: images for users reboot 10 s after a kernel panic so a
// board in a cupboard comes back by itself. Under QEMU the harness passes
// -no-reboot, so that reboot ends QEMU instead.
const userCmdline = "panic=10 loglevel=4"

// Boards returns the boards mkimage can build, by name.
func Boards() []Board {
	return []Board{
		{
			Name: "x86_64", GOARCH: "amd64", DebArch: "amd64",
			Modules: concat(fatModules(), firewallModules()),
			Drivers: concat(
				[]string{"virtio_rng", "virtio_pci", "virtio_net", "virtio_blk"},
				[]string{"e1000", "e1000e", "igb", "igc", "r8169"},
				[]string{"ahci", "nvme", "sd_mod", "usb_storage", "uas", "xhci_pci", "ehci_pci", "sdhci_pci", "mmc_block"},
				// The ACPI power button reaches PID 1 as an input event;
				// the watchdog of QEMU's -device i6300esb.
				[]string{"button", "evdev", "i6300esb"},
			),
			Optional: concat([]string{"efivarfs"}, firewallOptional()),
			Cmdline:  "console=ttyS0,115200 " + userCmdline,
			DiskSize: 256 << 20,
		},
		{
			Name: "rpi", GOARCH: "arm64", DebArch: "arm64",
			// The RNG first, so early getrandom does not stall; the
			// watchdog, because power-off needs it; USB networking needs
			// phy_generic before dwc2 probes, or the probe waits 10 s.
			Modules: concat([]string{"bcm2835_rng", "bcm2835_wdt", "phy_generic"}, fatModules(), firewallModules()),
			Drivers: concat(
				[]string{"reset_raspberrypi", "sdhci_iproc", "bcm2835", "mmc_block"},
				[]string{"dwc2", "xhci_pci", "usbnet", "cdc_ether", "smsc95xx", "lan78xx"},
				[]string{"genet", "broadcom", "mdio_bcm_unimac"},
				// QEMU's arm64 "virt" machine, the fast way to boot this image in tests.
				[]string{"virtio_rng", "virtio_pci", "virtio_net", "virtio_blk", "virtio_mmio"},
			),
			Optional: concat([]string{"efivarfs"}, firewallOptional()),
			// ttyAMA0 is the PL011 (QEMU's first serial port; GPIO 14/15 on a
			// Pi with Bluetooth off); ttyS1 is the mini UART on GPIO 14/15 of a
			// stock Pi 3/4. The last one is /dev/console.
			Cmdline:  "console=ttyAMA0,115200 console=ttyS1,115200 " + userCmdline,
			DiskSize: 256 << 20,
		},
	}
}

// LookupBoard returns the board called name.
func LookupBoard(name string) (Board, error) {
	var names []string
	for _, b := range Boards() {
		if b.Name == name {
			return b, nil
		}
		names = append(names, b.Name)
	}
	return Board{}, fmt.Errorf("unknown board %q: choose one of %s", name, strings.Join(names, ", "))
}

func concat(lists ...[]string) []string { return slices.Concat(lists...) }
