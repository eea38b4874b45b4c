package image

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// UKISection is one section added to systemd's EFI stub.
type UKISection struct {
	Name string // at most 8 bytes: .osrel, .cmdline, .initrd, .linux
	Data []byte
}

// BuildUKI appends sections to systemd-boot's EFI stub, making a unified
// kernel image: one EFI program that boots the kernel in .linux with the
// initrd in .initrd and the command line in .cmdline. Written here rather
// than with objcopy, which stamps the build time into the PE header.
//
// Each section goes at the next free address after the stub's own, aligned
// to 4 KiB in memory and to the file alignment on disk; SizeOfImage follows.
func BuildUKI(stub []byte, sections []UKISection) ([]byte, error) {
	le := binary.LittleEndian
	if len(stub) < 0x40 || stub[0] != 'M' || stub[1] != 'Z' {
		return nil, errors.New("UKI stub: not a PE file (no MZ header)")
	}
	peOff := int(le.Uint32(stub[0x3c:]))
	if peOff+24 > len(stub) || string(stub[peOff:peOff+4]) != "PE\x00\x00" {
		return nil, errors.New("UKI stub: no PE signature")
	}
	coff := peOff + 4
	nsec := int(le.Uint16(stub[coff+2:]))
	optSize := int(le.Uint16(stub[coff+16:]))
	opt := coff + 20
	if opt+optSize > len(stub) || le.Uint16(stub[opt:]) != 0x20b {
		return nil, errors.New("UKI stub: not a PE32+ image")
	}
	secAlign := le.Uint32(stub[opt+32:])
	fileAlign := le.Uint32(stub[opt+36:])
	sizeOfHeaders := int(le.Uint32(stub[opt+60:]))
	table := opt + optSize
	if secAlign == 0 || fileAlign == 0 {
		return nil, errors.New("UKI stub: zero section or file alignment")
	}

	// The new section headers must fit in the header area, before the
	// first section's data.
	end := table + 40*(nsec+len(sections))
	firstRaw := sizeOfHeaders
	var nextVA uint32
	for i := 0; i < nsec; i++ {
		s := table + 40*i
		vsize, va := le.Uint32(stub[s+8:]), le.Uint32(stub[s+12:])
		rawSize, raw := le.Uint32(stub[s+16:]), int(le.Uint32(stub[s+20:]))
		if rawSize > 0 && raw < firstRaw {
			firstRaw = raw
		}
		nextVA = max(nextVA, va+max(vsize, rawSize))
	}
	if end > sizeOfHeaders || end > firstRaw {
		return nil, fmt.Errorf("UKI stub: no room for %d more section headers", len(sections))
	}

	align := func(v, a uint32) uint32 { return (v + a - 1) / a * a }
	out := make([]byte, len(stub), len(stub)+sumLen(sections)+int(fileAlign)*len(sections)*2)
	copy(out, stub)
	vaAlign := max(secAlign, 4096)
	for i, sec := range sections {
		if len(sec.Name) > 8 || len(sec.Name) == 0 {
			return nil, fmt.Errorf("UKI section name %q must be 1 to 8 bytes", sec.Name)
		}
		nextVA = align(nextVA, vaAlign)
		raw := align(uint32(len(out)), fileAlign)
		out = append(out, make([]byte, int(raw)-len(out))...)
		out = append(out, sec.Data...)
		rawSize := align(uint32(len(sec.Data)), fileAlign)
		out = append(out, make([]byte, int(raw+rawSize)-len(out))...)

		h := out[table+40*(nsec+i):]
		clear(h[:40])
		copy(h[:8], sec.Name)
		le.PutUint32(h[8:], uint32(len(sec.Data))) // VirtualSize
		le.PutUint32(h[12:], nextVA)               // VirtualAddress
		le.PutUint32(h[16:], rawSize)              // SizeOfRawData
		le.PutUint32(h[20:], raw)                  // PointerToRawData
		le.PutUint32(h[36:], 0x40000040)           // initialized data, readable
		nextVA += uint32(len(sec.Data))
	}
	le.PutUint16(out[coff+2:], uint16(nsec+len(sections)))
	le.PutUint32(out[opt+56:], align(nextVA, secAlign)) // SizeOfImage
	le.PutUint32(out[opt+64:], 0)                       // CheckSum: unchecked for EFI programs
	return out, nil
}

func sumLen(secs []UKISection) int {
	n := 0
	for _, s := range secs {
		n += len(s.Data)
	}
	return n
}
