package image

import (
	"fmt"
	"slices"
	"strings"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"
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
	// Layout is the partition table: what each partition holds and how big
	// the image build makes it.
	Layout Layout
	// Boot is how the firmware finds the kernel.
	Boot BootKind
}

// BootKind is how a board's firmware finds the kernel.
type BootKind int

const (
	// BootUKI: UEFI firmware runs a unified kernel image (kernel, initrd and
	// command line in one PE file) at \EFI\BOOT\BOOTX64.EFI on the ESP.
	BootUKI BootKind = iota
	// BootRaspi: the Pi's boot ROM and firmware read an MBR FAT partition
	// holding bootcode.bin, start*.elf, config.txt, the kernel and initrd.
	BootRaspi
)

// Role says what a partition is for; one partition may have several.
type Role int

const (
	// RoleBoot holds what the firmware loads (the UKI, or the Pi's
	// firmware, kernel and initrd). The appliance never writes it.
	RoleBoot Role = 1 << iota
	// RoleConfig is the FAT labelled IOFOG that every laptop mounts: the
	// config the user edits and STATUS.txt.
	RoleConfig
	// RoleData is the journaled ext4 file system the appliance keeps its
	// state on; it is grown to fill the disk on first boot, so it must be
	// the last partition.
	RoleData
)

// FSKind is the file system a partition is made with.
type FSKind int

const (
	FAT32 FSKind = iota
	Ext4
)

// PartitionSpec is one partition of a board's layout.
type PartitionSpec struct {
	Name  string // GPT partition name (GPT only)
	Label string // file-system label: how the appliance finds it
	Roles Role
	FS    FSKind
	Size  int64 // bytes, a multiple of 1 MiB
	// GPTType or MBRType is the partition type, by the table's scheme.
	GPTType gpt.Type
	MBRType mbr.Type
}

// Layout is a board's partition table.
type Layout struct {
	Scheme     PartitionScheme
	Partitions []PartitionSpec
}

// Find returns the index (0-based) of the first partition with role r.
func (l Layout) Find(r Role) (int, bool) {
	for i, p := range l.Partitions {
		if p.Roles&r != 0 {
			return i, true
		}
	}
	return 0, false
}

// Label is the FAT volume label of the config partition (the one a user
// edits on a laptop); the appliance finds it by this label.
const Label = "IOFOG"

// DataLabel is the ext4 label of the data partition.
const DataLabel = "IOFOG-DATA"

// ESPLabel is the FAT label of the x86 EFI System Partition, which holds
// only the UKI.
const ESPLabel = "IOFOG-EFI"

// dataPartition is the same on every board: small in the image (it is
// grown to fill the disk on first boot), last in the table.
func dataPartition() PartitionSpec {
	return PartitionSpec{Name: "IOFOG-DATA", Label: DataLabel, Roles: RoleData, FS: Ext4, Size: 32 << 20,
		GPTType: gpt.LinuxFilesystem, MBRType: mbr.Linux}
}

// FAT32 sizes are chosen where go-diskfs's FAT-size formula leaves room
// for every cluster (64 MiB, for one, is a sector short; fsck.fat says so).
// FAT32 needs at least 65525 clusters, or Windows and macOS take it for
// FAT16: with 512-byte clusters that is 32 MiB of data area.
const minFAT32 = 40 << 20

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

// fsModules let the kernel mount the config partition (vfat will not mount
// without the code pages) and the data partition (ext4 with its journal;
// its metadata checksums need crc32c).
func fsModules() []string {
	return []string{"vfat", "nls_cp437", "nls_ascii", "nls_utf8", "crc16", "crc32c_generic", "mbcache", "jbd2", "ext4"}
}

// Panic behaviour: images for users reboot 10 s after a kernel panic so a
// board in a cupboard comes back by itself. Under QEMU the harness passes
// -no-reboot, so that reboot ends QEMU instead.
const userCmdline = "panic=10 loglevel=4"

// Boards returns the boards mkimage can build, by name.
func Boards() []Board {
	return []Board{
		{
			Name: "x86_64", GOARCH: "amd64", DebArch: "amd64",
			Modules: concat(fsModules(), firewallModules()),
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
			Boot:     BootUKI,
			// Windows gives an ESP no drive letter and macOS does not mount
			// it, so the config lives on a basic-data FAT of its own.
			Layout: Layout{Scheme: GPT, Partitions: []PartitionSpec{
				{Name: "EFI system", Label: ESPLabel, Roles: RoleBoot, FS: FAT32, Size: 72 << 20, GPTType: gpt.EFISystemPartition},
				{Name: "IOFOG", Label: Label, Roles: RoleConfig, FS: FAT32, Size: minFAT32, GPTType: gpt.MicrosoftBasicData},
				dataPartition(),
			}},
		},
		{
			Name: "rpi", GOARCH: "arm64", DebArch: "arm64",
			// The RNG first, so early getrandom does not stall; the
			// watchdog, because power-off needs it; USB networking needs
			// phy_generic before dwc2 probes, or the probe waits 10 s.
			Modules: concat([]string{"bcm2835_rng", "bcm2835_wdt", "phy_generic"}, fsModules(), firewallModules()),
			Drivers: concat(
				[]string{"reset_raspberrypi", "sdhci_iproc", "bcm2835", "mmc_block", "gpio_regulator"},
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
			Boot:     BootRaspi,
			// The boot ROM reads the first FAT of an MBR: firmware and
			// config share it.
			Layout: Layout{Scheme: MBR, Partitions: []PartitionSpec{
				{Label: Label, Roles: RoleBoot | RoleConfig, FS: FAT32, Size: 128 << 20, MBRType: mbr.Fat32LBA},
				dataPartition(),
			}},
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
