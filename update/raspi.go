package update

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
)

// Raspi holds the slots of a Raspberry Pi: directories on the boot FAT,
// config.txt naming the committed one, tryboot.txt the one the firmware
// boots once after a reboot with the "tryboot" flag.
type Raspi struct {
	Boot       string // the boot partition, mounted writable while updating
	DeviceTree string // /proc/device-tree: the firmware says there whether this boot was a tryboot
}

func (p *Raspi) readSlot(name string) (Slot, error) {
	data, err := os.ReadFile(filepath.Join(p.Boot, name))
	if err != nil {
		return "", err
	}
	s, err := RaspiSlotOf(data)
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return s, nil
}

// Tryboot reports whether the firmware booted through tryboot.txt.
func (p *Raspi) Tryboot() bool {
	b, err := os.ReadFile(filepath.Join(p.DeviceTree, "chosen", "bootloader", "tryboot"))
	return err == nil && len(b) >= 4 && binary.BigEndian.Uint32(b) != 0
}

func (p *Raspi) State() (running, def Slot, err error) {
	if def, err = p.readSlot(RaspiConfig); err != nil {
		return "", "", err
	}
	running = def
	if p.Tryboot() {
		if running, err = p.readSlot(RaspiTryboot); err != nil {
			return "", "", err
		}
	}
	return running, def, nil
}

func (p *Raspi) Install(s Slot, r *Reader, progress func(int64)) error {
	dir := filepath.Join(p.Boot, RaspiSlotDir(s))
	// The slot is wholly the bundle's: files of the old system that the
	// new one lacks go.
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			if !slices.ContainsFunc(r.Manifest.Files, func(f FileSum) bool { return f.Path == e.Name() }) {
				if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
					return err
				}
			}
		}
	}
	var done int64
	for {
		f, fr, err := r.Next()
		if err == io.EOF {
			return syncDir(dir)
		}
		if err != nil {
			return err
		}
		base := done
		if err := writeSlotFile(filepath.Join(dir, filepath.FromSlash(f.Path)), fr, func(n int64) { progress(base + n) }); err != nil {
			return err
		}
		done += f.Size
	}
}

func (p *Raspi) Check(s Slot, m *Manifest) error {
	for _, f := range m.Files {
		if err := checkFile(filepath.Join(p.Boot, RaspiSlotDir(s), filepath.FromSlash(f.Path)), f); err != nil {
			return err
		}
	}
	return nil
}

func (p *Raspi) ArmOnce(s Slot) error {
	return rewriteInPlace(filepath.Join(p.Boot, RaspiTryboot), RaspiConfigTxt(s))
}

func (p *Raspi) SetDefault(s Slot) error {
	return rewriteInPlace(filepath.Join(p.Boot, RaspiConfig), RaspiConfigTxt(s))
}

// RebootArg makes the firmware read tryboot.txt instead of config.txt,
// once.
func (p *Raspi) RebootArg() string { return "0 tryboot" }
