// Package bootpart finds the appliance's boot partition, the FAT file system
// the user edits from a laptop, and mounts it. It reads the volume label
// from each block device's FAT boot sector itself, so the image needs no
// udev and no /dev/disk/by-label.
package bootpart

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultLabel is the volume label of the boot partition the image builds.
const DefaultLabel = "IOFOG"

// ErrNotFAT is returned by ReadLabel for a sector that is no FAT boot sector.
var ErrNotFAT = errors.New("not a FAT boot sector")

// ReadLabel returns the volume label in a FAT12/16/32 boot sector, trimmed
// of the padding spaces. The boot sector's copy of the label is what
// mkfs.vfat, go-diskfs and Windows all write.
func ReadLabel(r io.ReaderAt) (string, error) {
	var bs [512]byte
	if _, err := r.ReadAt(bs[:], 0); err != nil {
		return "", fmt.Errorf("read boot sector: %w", err)
	}
	if bs[510] != 0x55 || bs[511] != 0xAA {
		return "", ErrNotFAT
	}
	bytesPerSector := binary.LittleEndian.Uint16(bs[11:13])
	switch bytesPerSector {
	case 512, 1024, 2048, 4096:
	default:
		return "", ErrNotFAT
	}
	if bs[13] == 0 || bs[16] == 0 { // sectors per cluster, number of FATs
		return "", ErrNotFAT
	}
	// FAT32 has no fixed root directory (root entries 0) and a 32-bit
	// FAT size; its extended boot record, and so the label, sits later.
	rootEntries := binary.LittleEndian.Uint16(bs[17:19])
	fatSize16 := binary.LittleEndian.Uint16(bs[22:24])
	ebr := 36 // FAT12/16
	if rootEntries == 0 && fatSize16 == 0 {
		ebr = 64
	}
	// 0x29 is the extended boot signature that says the label is there.
	if bs[ebr+2] != 0x29 {
		return "", nil
	}
	label := strings.TrimRight(string(bs[ebr+7:ebr+18]), " \x00")
	if label == "NO NAME" {
		return "", nil
	}
	return label, nil
}

// Spec says which device is the boot partition: a device path
// ("/dev/mmcblk0p1"), or "LABEL=NAME". Empty means LABEL=IOFOG.
type Spec string

func (s Spec) label() (string, bool) {
	if s == "" {
		return DefaultLabel, true
	}
	l, ok := strings.CutPrefix(string(s), "LABEL=")
	return l, ok
}

// Finder looks for a partition by label among the block devices: the boot
// partition (FAT) unless ReadLabel says otherwise.
type Finder struct {
	Spec Spec
	// SysBlock and Dev default to /sys/class/block and /dev.
	SysBlock, Dev string
	// Kind names the file system in messages ("FAT" when empty), and
	// ReadLabel reads its label (ReadLabel of this package when nil).
	Kind      string
	ReadLabel func(io.ReaderAt) (string, error)
}

// Find returns the device path of the boot partition, or an error saying
// which devices were looked at.
func (f Finder) Find() (string, error) {
	sysBlock, dev := or(f.SysBlock, "/sys/class/block"), or(f.Dev, "/dev")
	label, byLabel := f.Spec.label()
	if !byLabel {
		p := string(f.Spec)
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("boot partition %s (from iofog.boot=): %w", p, err)
		}
		return p, nil
	}
	ents, err := os.ReadDir(sysBlock)
	if err != nil {
		return "", fmt.Errorf("list block devices: %w", err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	// Partitions before whole disks, then by name, so a partitioned disk's
	// first FAT partition wins over a stray superfloppy.
	sort.SliceStable(names, func(i, j int) bool {
		pi, pj := isPartition(sysBlock, names[i]), isPartition(sysBlock, names[j])
		if pi != pj {
			return pi
		}
		return names[i] < names[j]
	})
	var seen []string
	for _, n := range names {
		if skipDevice(n) {
			continue
		}
		p := filepath.Join(dev, n)
		got, err := labelOf(p, f.ReadLabel)
		if err != nil {
			continue
		}
		seen = append(seen, fmt.Sprintf("%s=%q", n, got))
		if strings.EqualFold(got, label) {
			return p, nil
		}
	}
	kind := or(f.Kind, "FAT")
	if len(seen) == 0 {
		return "", fmt.Errorf("no %s file system labelled %s: no block device with a %s file system yet", kind, label, kind)
	}
	return "", fmt.Errorf("no %s file system labelled %s (found %s)", kind, label, strings.Join(seen, ", "))
}

// Wait calls Find until it succeeds or timeout passes. Between tries it
// calls poll, which the appliance uses to load drivers for devices that
// appeared meanwhile (USB and SD cards probe late).
func (f Finder) Wait(ctx context.Context, timeout time.Duration, poll func()) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		p, err := f.Find()
		if err == nil {
			return p, nil
		}
		if poll != nil {
			poll()
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("after waiting %s: %w", timeout, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func labelOf(dev string, read func(io.ReaderAt) (string, error)) (string, error) {
	if read == nil {
		read = ReadLabel
	}
	fd, err := os.OpenFile(dev, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return "", err
	}
	defer fd.Close()
	return read(fd)
}

func isPartition(sysBlock, name string) bool {
	_, err := os.Stat(filepath.Join(sysBlock, name, "partition"))
	return err == nil
}

// skipDevice leaves out devices that never hold the boot partition and
// that can block or wake hardware when opened.
func skipDevice(name string) bool {
	for _, p := range []string{"loop", "ram", "zram", "sr", "md", "dm-", "nbd"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return strings.HasPrefix(name, "mmcblk") && strings.Contains(name, "boot") // eMMC boot areas
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Modules are the kernel modules Mount needs (when they are not built in).
func Modules() []string { return []string{"vfat", "nls_cp437", "nls_ascii"} }

// mountFlags and mountOpts are the boot partition's mount. "flush" writes
// data out early, because the card can be pulled at any moment; the kernel
// needs nls_cp437 and nls_ascii loaded for the default code page and
// charset.
const (
	mountFlags = unix.MS_NOATIME | unix.MS_NODEV | unix.MS_NOSUID | unix.MS_NOEXEC
	mountOpts  = "flush,errors=remount-ro,shortname=mixed,fmask=0022,dmask=0022"
)

// Mount mounts the FAT file system on dev at dir, read-only: FAT has no
// journal, and a FAT that is not being written cannot be corrupted by a
// power cut. Writes go through Partition.Writable.
func Mount(dev, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("mount boot partition: %w", err)
	}
	if err := unix.Mount(dev, dir, "vfat", mountFlags|unix.MS_RDONLY, mountOpts); err != nil {
		return fmt.Errorf("mount %s on %s (vfat, read-only, %s): %w (a FAT mount fails with EINVAL until nls_cp437 and nls_ascii are loaded)", dev, dir, mountOpts, err)
	}
	return nil
}

// Partition is the mounted boot partition; it serialises the rare writes.
type Partition struct {
	Dir string
	mu  sync.Mutex
}

// Writable runs fn with the partition remounted read-write and
// synchronous (every write and directory change reaches the card before
// the call returns), then remounts it read-only, which flushes it and
// clears the FAT's dirty bit. A power cut can only hurt the FAT inside
// this window.
func (p *Partition) Writable(fn func() error) error {
	return p.writable(unix.MS_SYNCHRONOUS|unix.MS_DIRSYNC, fn)
}

// WritableBulk is Writable for writing large files that fn syncs itself:
// directory changes are synchronous, file data is not (a synchronous vfat
// writes the FAT at every cluster, minutes for a kernel).
func (p *Partition) WritableBulk(fn func() error) error {
	return p.writable(unix.MS_DIRSYNC, fn)
}

func (p *Partition) writable(flags uintptr, fn func() error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := unix.Mount("", p.Dir, "vfat", unix.MS_REMOUNT|mountFlags|flags, mountOpts); err != nil {
		return fmt.Errorf("remount %s read-write: %w", p.Dir, err)
	}
	err := fn()
	if rerr := unix.Mount("", p.Dir, "vfat", unix.MS_REMOUNT|mountFlags|unix.MS_RDONLY, mountOpts); rerr != nil {
		err = errors.Join(err, fmt.Errorf("remount %s read-only: %w", p.Dir, rerr))
	}
	return err
}

// RewriteInPlace overwrites the existing file name (relative to the
// partition) with data padded to the file's current size by pad, without
// truncating or extending it: its cluster chain and directory entry's size
// never change, so a cut mid-write leaves old and new text mixed at worst,
// never a broken FAT. A file the image build did not make is not created.
func (p *Partition) RewriteInPlace(name string, data []byte, pad func([]byte, int) []byte) error {
	return p.Writable(func() error {
		path := filepath.Join(p.Dir, name)
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("%w (the image build makes it; this appliance never creates files on the boot partition)", err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		if st.Size() == 0 {
			f.Close()
			return fmt.Errorf("%s is empty: nothing to rewrite in place", path)
		}
		buf := pad(data, int(st.Size()))
		if _, err := f.WriteAt(buf[:st.Size()], 0); err != nil {
			f.Close()
			return fmt.Errorf("rewrite %s: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("rewrite %s: fsync: %w", path, err)
		}
		return f.Close()
	})
}

// Unmount flushes and unmounts dir; when the file system is busy it is
// remounted read-only instead, which is as safe for a power-off.
func Unmount(dir string) error {
	unix.Sync()
	if err := unix.Unmount(dir, 0); err == nil {
		return nil
	}
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("unmount %s, or remount it read-only: %w", dir, err)
	}
	return nil
}
