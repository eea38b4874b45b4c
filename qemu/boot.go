// Package qemu boots the appliance's images under QEMU, for tests and for
// `make qemu`: it captures the serial console, forwards chosen guest TCP
// ports to loopback, waits for a line on the console, and always cleans up.
//
// Everything runs under emulation (TCG); KVM is optional and off by default.
package qemu

import (
	"bytes"
	"crypto/sha256"
	"debug/pe"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/eclipse-iofog/iofog-connector/image"
	"github.com/xi2/xz"
)

// Boot is what QEMU loads directly, taken out of a built image so the test
// boots the image's own kernel, initrd and command line.
type Boot struct {
	Kernel  []byte // vmlinux ELF (x86) or arm64 Image
	Initrd  []byte
	DTB     []byte // rpi only
	Cmdline string
}

// ExtractBoot reads the kernel, initrd, command line (and, for the Pi, the
// Pi 3 device tree) out of the image at img. On x86 the kernel is unpacked
// from the UKI's bzImage to a vmlinux ELF, which QEMU boots directly: the
// in-guest decompression costs seconds under emulation. Unpacked kernels are
// kept in cacheDir (keyed by the bzImage's checksum) when it is not empty.
func ExtractBoot(img, board, cacheDir string) (*Boot, error) {
	switch board {
	case "x86_64":
		uki, err := image.ReadFile(img, image.ESPLabel, image.UKIPath)
		if err != nil {
			return nil, err
		}
		secs, err := peSections(uki, ".linux", ".initrd", ".cmdline")
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", img, image.UKIPath, err)
		}
		vmlinux, err := cachedVmlinux(secs[".linux"], cacheDir)
		if err != nil {
			return nil, err
		}
		return &Boot{Kernel: vmlinux, Initrd: secs[".initrd"], Cmdline: strings.TrimRight(string(secs[".cmdline"]), "\x00\n")}, nil
	case "rpi":
		b := &Boot{}
		for name, dst := range map[string]*[]byte{
			image.RaspiKernel: &b.Kernel, image.RaspiInitrd: &b.Initrd, "A/bcm2837-rpi-3-b.dtb": &b.DTB,
		} {
			data, err := image.ReadBootFile(img, name)
			if err != nil {
				return nil, err
			}
			*dst = data
		}
		cmdline, err := image.ReadBootFile(img, "cmdline.txt")
		if err != nil {
			return nil, err
		}
		b.Cmdline = strings.TrimSpace(string(cmdline))
		return b, nil
	}
	return nil, fmt.Errorf("no QEMU boot for board %q", board)
}

// peSections returns the named sections of a PE file (a UKI).
func peSections(data []byte, names ...string) (map[string][]byte, error) {
	f, err := pe.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("not a PE file: %w", err)
	}
	out := map[string][]byte{}
	for _, n := range names {
		s := f.Section(n)
		if s == nil {
			return nil, fmt.Errorf("no %s section: not a unified kernel image", n)
		}
		b, err := s.Data()
		if err != nil {
			return nil, fmt.Errorf("section %s: %w", n, err)
		}
		// Data is padded to the file alignment; VirtualSize is the real size.
		if int(s.VirtualSize) < len(b) {
			b = b[:s.VirtualSize]
		}
		out[n] = b
	}
	return out, nil
}

func cachedVmlinux(bzImage []byte, cacheDir string) ([]byte, error) {
	sum := sha256.Sum256(bzImage)
	var p string
	if cacheDir != "" {
		p = filepath.Join(cacheDir, "vmlinux", hex.EncodeToString(sum[:16])+".elf")
		if b, err := os.ReadFile(p); err == nil {
			return b, nil
		}
	}
	elf, err := Vmlinux(bzImage)
	if err != nil {
		return nil, err
	}
	if p != "" {
		// Best effort: a unique temporary name, so tests booting at once in
		// several processes never rename a half-written file into place.
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
			if f, err := os.CreateTemp(filepath.Dir(p), "vmlinux-*.tmp"); err == nil {
				_, werr := f.Write(elf)
				if cerr := f.Close(); werr == nil && cerr == nil {
					_ = os.Rename(f.Name(), p)
				}
				os.Remove(f.Name())
			}
		}
	}
	return elf, nil
}

// Vmlinux unpacks the vmlinux ELF from an x86 bzImage whose payload is xz
// with the x86 BCJ filter (Debian's kernels).
func Vmlinux(bzImage []byte) ([]byte, error) {
	if len(bzImage) < 0x250 || string(bzImage[0x202:0x206]) != "HdrS" {
		return nil, errors.New("not an x86 bzImage (no HdrS boot header)")
	}
	setupSects := int(bzImage[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	off := (setupSects+1)*512 + int(binary.LittleEndian.Uint32(bzImage[0x248:]))
	n := int(binary.LittleEndian.Uint32(bzImage[0x24c:]))
	if off < 0 || n <= 0 || off+n > len(bzImage) {
		return nil, errors.New("bzImage payload is outside the file")
	}
	payload := bzImage[off : off+n]
	if !bytes.HasPrefix(payload, []byte{0xfd, '7', 'z', 'X', 'Z', 0}) {
		return nil, fmt.Errorf("bzImage payload is not xz (starts % x); only xz kernels are supported", payload[:min(6, len(payload))])
	}
	r, err := xz.NewReader(bytes.NewReader(payload), 0)
	if err != nil {
		return nil, fmt.Errorf("bzImage payload: %w", err)
	}
	// The kernel build appends the unpacked size after the xz stream.
	r.Multistream(false)
	elf, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("unpacking the kernel: %w", err)
	}
	if !bytes.HasPrefix(elf, []byte("\x7fELF")) {
		return nil, errors.New("bzImage payload did not unpack to an ELF vmlinux")
	}
	return elf, nil
}
