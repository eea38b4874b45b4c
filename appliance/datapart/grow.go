package datapart

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"golang.org/x/sys/unix"
)

// Growth is what Grow did.
type Growth struct {
	Disk               string // the whole disk, e.g. /dev/vda
	PartitionFrom      int64  // bytes before
	PartitionTo        int64  // bytes after
	FSFrom, FSTo       int64  // file system bytes before and after
	PartitionUnchanged bool   // the partition already filled the disk
}

// Grown reports whether anything grew.
func (g Growth) Grown() bool { return g.PartitionTo > g.PartitionFrom || g.FSTo > g.FSFrom }

// Grow makes the data partition dev, mounted at dir, fill the rest of its
// disk, then grows the mounted ext4 file system to fill the partition. It
// is idempotent and safe to cut at any point: the partition table is
// rewritten with the backup copy first (GPT) or in one sector (MBR), the
// kernel is told of the new size (BLKPG), and ext4 grows online through
// its journal. A boot after a cut finds the partition or the file system
// still small and finishes the job.
//
// sysBlock is /sys/class/block (tests may point elsewhere).
func Grow(dev, dir, sysBlock string) (Growth, error) {
	var g Growth
	name := filepath.Base(dev)
	part := filepath.Join(sysBlock, name)
	pno, err := readSysInt(filepath.Join(part, "partition"))
	if err != nil {
		return g, fmt.Errorf("%s is not a partition: %w", dev, err)
	}
	start, err := readSysInt(filepath.Join(part, "start"))
	if err != nil {
		return g, err
	}
	size, err := readSysInt(filepath.Join(part, "size"))
	if err != nil {
		return g, err
	}
	real, err := filepath.EvalSymlinks(part)
	if err != nil {
		return g, err
	}
	diskName := filepath.Base(filepath.Dir(real))
	diskSectors, err := readSysInt(filepath.Join(sysBlock, diskName, "size"))
	if err != nil {
		return g, err
	}
	g.Disk = filepath.Join(filepath.Dir(dev), diskName)
	// sysfs counts 512-byte sectors whatever the device's sector size.
	g.PartitionFrom, g.PartitionTo = size*512, size*512

	disk, err := os.OpenFile(g.Disk, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return g, fmt.Errorf("open %s: %w", g.Disk, err)
	}
	defer disk.Close()
	lbs := int64(512)
	if v, err := readSysInt(filepath.Join(sysBlock, diskName, "queue", "logical_block_size")); err == nil && v > 0 {
		lbs = v
	}
	newEnd, err := growTable(disk, int(pno), start*512/lbs, diskSectors*512, lbs)
	if err != nil {
		return g, err
	}
	newBytes := (newEnd+1)*lbs - start*512
	if newBytes > g.PartitionFrom {
		if err := blkpgResize(disk, int(pno), start*512, newBytes); err != nil {
			return g, err
		}
		g.PartitionTo = newBytes
	} else {
		g.PartitionUnchanged = true
	}

	// The file system, to fill the partition.
	f, err := os.Open(dev)
	if err != nil {
		return g, err
	}
	sb, err := readSuper(f)
	f.Close()
	if err != nil {
		return g, fmt.Errorf("%s: %w", dev, err)
	}
	count, bs := blocks(sb)
	g.FSFrom, g.FSTo = int64(count*bs), int64(count*bs)
	want := uint64(g.PartitionTo) / bs
	if want <= count {
		return g, nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return g, err
	}
	defer d.Close()
	// EXT4_IOC_RESIZE_FS: _IOW('f', 16, __u64).
	const ext4IocResizeFS = 0x40086610
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, d.Fd(), ext4IocResizeFS, uintptr(unsafe.Pointer(&want))); errno != 0 {
		return g, fmt.Errorf("growing the ext4 file system on %s to %d blocks (EXT4_IOC_RESIZE_FS): %w", dev, want, errno)
	}
	g.FSTo = int64(want * bs)
	return g, nil
}

// growTable rewrites the partition table so partition pno (1-based) ends
// at the end of the disk, and returns its last sector (in logical blocks).
// It refuses when pno is not the last partition.
func growTable(disk *os.File, pno int, start, diskBytes, lbs int64) (int64, error) {
	mbr := make([]byte, 512)
	if _, err := disk.ReadAt(mbr, 0); err != nil {
		return 0, fmt.Errorf("read partition table: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return 0, errors.New("no partition table on the disk")
	}
	if mbr[446+4] == 0xee {
		return growGPT(disk, pno, diskBytes, lbs)
	}
	return growMBR(disk, mbr, pno, start, diskBytes/lbs)
}

func growGPT(disk *os.File, pno int, diskBytes, lbs int64) (int64, error) {
	t, err := gpt.Read(disk, int(lbs), int(lbs))
	if err != nil {
		return 0, fmt.Errorf("read GPT: %w", err)
	}
	var p *gpt.Partition
	for _, q := range t.Partitions {
		if q.Index == pno {
			p = q
		}
	}
	if p == nil {
		return 0, fmt.Errorf("GPT has no partition %d", pno)
	}
	for _, q := range t.Partitions {
		if q != p && q.Start > p.Start && q.Type != gpt.Unused {
			return 0, fmt.Errorf("partition %d is not the last one (partition %d follows): not growing it", pno, q.Index)
		}
	}
	// Move the backup GPT to the end of the (larger) disk, and end the
	// partition just before it.
	t.Resize(uint64(diskBytes))
	last := t.LastDataSector()
	if uint64(last) <= p.End {
		return int64(p.End), nil
	}
	p.End = last
	p.Size = (p.End - p.Start + 1) * uint64(lbs)
	if err := t.Write(disk, diskBytes); err != nil {
		return 0, fmt.Errorf("write GPT: %w", err)
	}
	return int64(p.End), disk.Sync()
}

func growMBR(disk *os.File, sector []byte, pno int, start, diskSectors int64) (int64, error) {
	if pno < 1 || pno > 4 {
		return 0, fmt.Errorf("partition %d is not a primary MBR partition", pno)
	}
	e := sector[446+16*(pno-1):]
	pStart := int64(binary.LittleEndian.Uint32(e[8:]))
	pCount := int64(binary.LittleEndian.Uint32(e[12:]))
	if pStart != start {
		return 0, fmt.Errorf("MBR entry %d starts at %d, the kernel says %d", pno, pStart, start)
	}
	for i := range 4 {
		o := sector[446+16*i:]
		if i != pno-1 && o[4] != 0 && int64(binary.LittleEndian.Uint32(o[8:])) > pStart {
			return 0, fmt.Errorf("partition %d is not the last one (partition %d follows): not growing it", pno, i+1)
		}
	}
	want := min(diskSectors-pStart, 0xffffffff)
	if want <= pCount {
		return pStart + pCount - 1, nil
	}
	binary.LittleEndian.PutUint32(e[12:], uint32(want))
	// One sector: written whole or not at all.
	if _, err := disk.WriteAt(sector[:512], 0); err != nil {
		return 0, fmt.Errorf("write MBR: %w", err)
	}
	if err := disk.Sync(); err != nil {
		return 0, err
	}
	return pStart + want - 1, nil
}

// blkpgResize tells the kernel partition pno is now length bytes.
func blkpgResize(disk *os.File, pno int, start, length int64) error {
	p := unix.BlkpgPartition{Start: start, Length: length, Pno: int32(pno)}
	arg := unix.BlkpgIoctlArg{Op: unix.BLKPG_RESIZE_PARTITION, Datalen: int32(unsafe.Sizeof(p)), Data: (*byte)(unsafe.Pointer(&p))}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, disk.Fd(), unix.BLKPG, uintptr(unsafe.Pointer(&arg))); errno != 0 {
		return fmt.Errorf("telling the kernel partition %d grew (BLKPG_RESIZE_PARTITION): %w", pno, errno)
	}
	return nil
}

func readSysInt(p string) (int64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}
