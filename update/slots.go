package update

import (
	"fmt"
	"strings"
)

// Slot names one of the two system slots.
type Slot string

const (
	SlotA Slot = "A"
	SlotB Slot = "B"
)

// Other returns the slot that is not s.
func (s Slot) Other() Slot {
	if s == SlotA {
		return SlotB
	}
	return SlotA
}

// Valid reports whether s is A or B.
func (s Slot) Valid() bool { return s == SlotA || s == SlotB }

// ParseSlot reads "A" or "B".
func ParseSlot(v string) (Slot, error) {
	s := Slot(strings.ToUpper(strings.TrimSpace(v)))
	if !s.Valid() {
		return "", fmt.Errorf("slot %q: want A or B", v)
	}
	return s, nil
}

// x86 UEFI: each slot is one unified kernel image on the ESP, booted by a
// UEFI boot entry of its own. The removable-media path (EFI/BOOT/BOOTX64.EFI)
// keeps the image's first system as the fallback of a firmware that has
// lost its boot entries; updates never write it.
const (
	UKIFile    = "linux.efi" // the one file of an x86 bundle
	efiSlotDir = "EFI/iofog"
)

// UKISlotPath is where slot s's UKI lives on the ESP.
func UKISlotPath(s Slot) string { return efiSlotDir + "/" + string(s) + ".efi" }

// Raspberry Pi: each slot is a directory on the boot FAT holding the
// kernel, initramfs and device trees; the firmware's os_prefix selects it.
// config.txt names the committed slot; tryboot.txt, read instead of
// config.txt once after a reboot with the "tryboot" flag, names the slot
// on trial.
const (
	RaspiKernel  = "vmlinuz"
	RaspiInitrd  = "initrd.gz"
	RaspiConfig  = "config.txt"
	RaspiTryboot = "tryboot.txt"
	// RaspiConfigSize is the fixed size of config.txt and tryboot.txt: the
	// appliance rewrites them in place, so a commit changes no FAT
	// structure, only the file's own sectors.
	RaspiConfigSize = 1024
)

// RaspiSlotDir is slot s's directory on the Pi's boot partition.
func RaspiSlotDir(s Slot) string { return string(s) }

// RaspiConfigTxt is the firmware's config.txt (or tryboot.txt) booting
// slot s: 64-bit, serial console on, upstream device trees
// (bcm2837-rpi-3-b.dtb, bcm2711-rpi-4-b.dtb), the slot's kernel and
// initramfs; padded with a comment to RaspiConfigSize.
func RaspiConfigTxt(s Slot) []byte {
	text := `# Raspberry Pi firmware settings, written by the appliance. The
# Connector's own settings are in connector.cue (or connector.hcl /
# iofog-connector.conf) beside this file. os_prefix is the system slot
# this file boots; the appliance switches it when an update commits.
arm_64bit=1
enable_uart=1
upstream_kernel=1
disable_splash=1
os_prefix=` + RaspiSlotDir(s) + `/
kernel=` + RaspiKernel + `
initramfs ` + RaspiInitrd + ` followkernel
`
	return pad([]byte(text), RaspiConfigSize)
}

// RaspiSlotOf reads which slot a config.txt or tryboot.txt boots.
func RaspiSlotOf(configTxt []byte) (Slot, error) {
	for _, line := range strings.Split(string(configTxt), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "os_prefix="); ok {
			return ParseSlot(strings.TrimSuffix(v, "/"))
		}
	}
	return "", fmt.Errorf("no os_prefix line")
}

// pad fills text to size with a comment line of '#', so the file keeps its
// size (and its clusters) across rewrites.
func pad(text []byte, size int) []byte {
	if len(text)+2 > size {
		panic("update: text longer than its fixed size")
	}
	out := make([]byte, 0, size)
	out = append(out, text...)
	for len(out) < size-1 {
		out = append(out, '#')
	}
	return append(out, '\n')
}
