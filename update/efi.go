package update

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf16"

	"golang.org/x/sys/unix"
)

// EFIGlobal is the UEFI global variable GUID (Boot####, BootOrder,
// BootNext, BootCurrent), as efivarfs names files.
const EFIGlobal = "8be4df61-93ca-11d2-aa0d-00e098032b8c"

// EFIVars is where efivarfs is mounted.
const EFIVars = "/sys/firmware/efi/efivars"

// Attributes of the boot variables: non-volatile, boot and runtime access.
const efiVarAttrs = 0x7

// loadOptionActive is LOAD_OPTION_ACTIVE.
const loadOptionActive = 0x1

// HardDrive is the partition a boot entry's file is on (the ESP), as the
// UEFI hard-drive device path node names it.
type HardDrive struct {
	Number uint32   // partition number, from 1
	Start  uint64   // first LBA
	Size   uint64   // in LBAs
	GUID   [16]byte // the GPT partition's unique GUID, in its on-disk byte order
}

// LoadOption is one UEFI Boot#### entry: a description and a file on a
// partition.
type LoadOption struct {
	Active      bool
	Description string
	Disk        HardDrive
	Path        string // \EFI\iofog\A.efi
}

func ucs2(s string) []byte {
	var b []byte
	for _, r := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, r)
	}
	return append(b, 0, 0)
}

// Marshal encodes the EFI_LOAD_OPTION: attributes, the device path's
// length, the UCS-2 description, the device path (hard drive, file path,
// end), no optional data.
func (o LoadOption) Marshal() []byte {
	le := binary.LittleEndian
	var dp []byte
	// Hard drive media node: type 4, subtype 1, 42 bytes; GPT, GUID signature.
	dp = append(dp, 4, 1)
	dp = le.AppendUint16(dp, 42)
	dp = le.AppendUint32(dp, o.Disk.Number)
	dp = le.AppendUint64(dp, o.Disk.Start)
	dp = le.AppendUint64(dp, o.Disk.Size)
	dp = append(dp, o.Disk.GUID[:]...)
	dp = append(dp, 0x02, 0x02)
	// File path media node: type 4, subtype 4.
	path := ucs2(o.Path)
	dp = append(dp, 4, 4)
	dp = le.AppendUint16(dp, uint16(4+len(path)))
	dp = append(dp, path...)
	// End of the whole device path.
	dp = append(dp, 0x7f, 0xff, 4, 0)

	var attrs uint32
	if o.Active {
		attrs |= loadOptionActive
	}
	out := le.AppendUint32(nil, attrs)
	out = le.AppendUint16(out, uint16(len(dp)))
	out = append(out, ucs2(o.Description)...)
	return append(out, dp...)
}

// ParseLoadOption decodes an EFI_LOAD_OPTION. Entries made by the
// firmware or other tools may lack a hard-drive or file node; those fields
// stay empty.
func ParseLoadOption(b []byte) (LoadOption, error) {
	le := binary.LittleEndian
	var o LoadOption
	if len(b) < 6 {
		return o, errors.New("load option: shorter than its header")
	}
	o.Active = le.Uint32(b)&loadOptionActive != 0
	dpLen := int(le.Uint16(b[4:]))
	rest := b[6:]
	var desc []uint16
	for {
		if len(rest) < 2 {
			return o, errors.New("load option: description not terminated")
		}
		c := le.Uint16(rest)
		rest = rest[2:]
		if c == 0 {
			break
		}
		desc = append(desc, c)
	}
	o.Description = string(utf16.Decode(desc))
	if dpLen > len(rest) {
		return o, errors.New("load option: device path longer than the variable")
	}
	dp := rest[:dpLen]
	for len(dp) >= 4 {
		typ, sub, n := dp[0], dp[1], int(le.Uint16(dp[2:]))
		if n < 4 || n > len(dp) {
			return o, errors.New("load option: bad device path node length")
		}
		node := dp[4:n]
		switch {
		case typ == 0x7f && sub == 0xff:
			return o, nil
		case typ == 4 && sub == 1 && len(node) >= 38:
			o.Disk.Number = le.Uint32(node)
			o.Disk.Start = le.Uint64(node[4:])
			o.Disk.Size = le.Uint64(node[12:])
			copy(o.Disk.GUID[:], node[20:36])
		case typ == 4 && sub == 4:
			var p []uint16
			for i := 0; i+1 < len(node); i += 2 {
				c := le.Uint16(node[i:])
				if c == 0 {
					break
				}
				p = append(p, c)
			}
			o.Path = string(utf16.Decode(p))
		}
		dp = dp[n:]
	}
	return o, nil
}

// EFI holds the x86 slots: a UKI per slot on the ESP and a UEFI boot
// entry per slot. BootNext (used once, then cleared by the firmware)
// makes the trial boot; BootOrder keeps the committed slot first.
type EFI struct {
	Vars string    // efivarfs, EFIVars
	ESP  string    // the ESP, mounted writable while updating
	Disk HardDrive // where the ESP is, for the boot entries
}

func varName(name string) string { return name + "-" + EFIGlobal }

func (e *EFI) readVar(name string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(e.Vars, varName(name)))
	if err != nil {
		return nil, err
	}
	if len(b) < 4 {
		return nil, fmt.Errorf("EFI variable %s: shorter than its attributes", name)
	}
	return b[4:], nil
}

// writeVar writes an EFI variable in one write, as efivarfs wants,
// clearing the immutable flag efivarfs puts on existing variables.
func (e *EFI) writeVar(name string, value []byte) error {
	p := filepath.Join(e.Vars, varName(name))
	if f, err := os.Open(p); err == nil {
		if flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS); err == nil && flags&fsImmutable != 0 {
			v := int(flags &^ fsImmutable)
			if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, v); err != nil {
				f.Close()
				return fmt.Errorf("clearing the immutable flag of EFI variable %s: %w", name, err)
			}
		}
		f.Close()
	}
	data := binary.LittleEndian.AppendUint32(nil, efiVarAttrs)
	data = append(data, value...)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("EFI variable %s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing EFI variable %s: %w", name, err)
	}
	return f.Close()
}

func u16s(b []byte) []uint16 {
	out := make([]uint16, len(b)/2)
	for i := range out {
		out[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return out
}

func u16bytes(v []uint16) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint16(b, x)
	}
	return b
}

// efiPath is a slot's UKI path as a boot entry names it.
func efiPath(s Slot) string { return `\` + strings.ReplaceAll(UKISlotPath(s), "/", `\`) }

// entries finds the boot entries of the two slots by the file they boot,
// making the missing ones (a fresh image has none) and putting them in
// BootOrder after... the committed slot's first.
func (e *EFI) entries() (map[Slot]uint16, []uint16, error) {
	order, err := e.readVar("BootOrder")
	if err != nil && !os.IsNotExist(err) {
		return nil, nil, err
	}
	nums := u16s(order)
	found := map[Slot]uint16{}
	used := map[uint16]bool{}
	ents, err := os.ReadDir(e.Vars)
	if err != nil {
		return nil, nil, err
	}
	for _, ent := range ents {
		var n uint16
		if _, err := fmt.Sscanf(ent.Name(), "Boot%04X-"+EFIGlobal, &n); err != nil || len(ent.Name()) != len("Boot0000-"+EFIGlobal) {
			continue
		}
		used[n] = true
		b, err := e.readVar(fmt.Sprintf("Boot%04X", n))
		if err != nil {
			continue
		}
		o, err := ParseLoadOption(b)
		if err != nil {
			continue
		}
		for _, s := range []Slot{SlotA, SlotB} {
			if _, ok := found[s]; !ok && strings.EqualFold(o.Path, efiPath(s)) && o.Disk.GUID == e.Disk.GUID {
				found[s] = n
			}
		}
	}
	changed := false
	for _, s := range []Slot{SlotA, SlotB} {
		if _, ok := found[s]; ok {
			continue
		}
		var n uint16
		for used[n] {
			n++
		}
		used[n] = true
		o := LoadOption{Active: true, Description: "ioFog Connector " + string(s), Disk: e.Disk, Path: efiPath(s)}
		if err := e.writeVar(fmt.Sprintf("Boot%04X", n), o.Marshal()); err != nil {
			return nil, nil, err
		}
		found[s] = n
		changed = true
	}
	if changed || !slices.Contains(nums, found[SlotA]) || !slices.Contains(nums, found[SlotB]) {
		// Neither slot is the default yet: A, the image's own, is.
		first := SlotA
		if i, j := slices.Index(nums, found[SlotA]), slices.Index(nums, found[SlotB]); j >= 0 && (i < 0 || j < i) {
			first = SlotB
		}
		nums = orderFirst(nums, found[first], found[first.Other()])
		if err := e.writeVar("BootOrder", u16bytes(nums)); err != nil {
			return nil, nil, err
		}
	}
	return found, nums, nil
}

// orderFirst puts a then b at the front of order, keeping the rest.
func orderFirst(order []uint16, a, b uint16) []uint16 {
	out := []uint16{a, b}
	for _, n := range order {
		if n != a && n != b {
			out = append(out, n)
		}
	}
	return out
}

// State reads BootCurrent and BootOrder. On a fresh box it first makes
// the slots' boot entries, slot A first.
func (e *EFI) State() (running, def Slot, err error) {
	found, order, err := e.entries()
	if err != nil {
		return "", "", err
	}
	for _, n := range order {
		if n == found[SlotA] {
			def = SlotA
			break
		}
		if n == found[SlotB] {
			def = SlotB
			break
		}
	}
	if cur, err := e.readVar("BootCurrent"); err == nil && len(cur) >= 2 {
		switch binary.LittleEndian.Uint16(cur) {
		case found[SlotA]:
			running = SlotA
		case found[SlotB]:
			running = SlotB
		}
	}
	return running, def, nil
}

func (e *EFI) Install(s Slot, r *Reader, progress func(int64)) error {
	if len(r.Manifest.Files) != 1 || r.Manifest.Files[0].Path != UKIFile {
		return fmt.Errorf("an x86 bundle holds one file, %s", UKIFile)
	}
	_, fr, err := r.Next()
	if err != nil {
		return err
	}
	if err := writeSlotFile(filepath.Join(e.ESP, filepath.FromSlash(UKISlotPath(s))), fr, progress); err != nil {
		return err
	}
	if _, _, err := r.Next(); err != io.EOF {
		return fmt.Errorf("after %s: %v", UKIFile, err)
	}
	return nil
}

func (e *EFI) Check(s Slot, m *Manifest) error {
	return checkFile(filepath.Join(e.ESP, filepath.FromSlash(UKISlotPath(s))), m.Files[0])
}

func (e *EFI) ArmOnce(s Slot) error {
	found, _, err := e.entries()
	if err != nil {
		return err
	}
	return e.writeVar("BootNext", binary.LittleEndian.AppendUint16(nil, found[s]))
}

func (e *EFI) SetDefault(s Slot) error {
	found, order, err := e.entries()
	if err != nil {
		return err
	}
	return e.writeVar("BootOrder", u16bytes(orderFirst(order, found[s], found[s.Other()])))
}

func (e *EFI) RebootArg() string { return "" }

// GPTPartition reads partition number n (from 1) of the GPT disk at dev:
// where it starts and ends and its unique GUID, for the boot entries.
func GPTPartition(dev string, n uint32) (HardDrive, error) {
	f, err := os.Open(dev)
	if err != nil {
		return HardDrive{}, err
	}
	defer f.Close()
	const lba = 512
	hdr := make([]byte, 92)
	if _, err := f.ReadAt(hdr, lba); err != nil {
		return HardDrive{}, fmt.Errorf("%s: reading the GPT header: %w", dev, err)
	}
	if !bytes.Equal(hdr[:8], []byte("EFI PART")) {
		return HardDrive{}, fmt.Errorf("%s: no GPT", dev)
	}
	le := binary.LittleEndian
	entriesLBA, count, size := le.Uint64(hdr[72:]), le.Uint32(hdr[80:]), le.Uint32(hdr[84:])
	if n == 0 || n > count || size < 128 || size > 4096 {
		return HardDrive{}, fmt.Errorf("%s: no partition %d in the GPT", dev, n)
	}
	ent := make([]byte, size)
	if _, err := f.ReadAt(ent, int64(entriesLBA)*lba+int64(n-1)*int64(size)); err != nil {
		return HardDrive{}, err
	}
	h := HardDrive{Number: n, Start: le.Uint64(ent[32:])}
	h.Size = le.Uint64(ent[40:]) - h.Start + 1
	copy(h.GUID[:], ent[16:32])
	return h, nil
}

// fsImmutable is FS_IMMUTABLE_FL (linux/fs.h), which efivarfs sets on
// existing variables.
const fsImmutable = 0x10
