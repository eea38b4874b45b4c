package image

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"
)

// File is one file on the boot partition.
type File struct {
	Path string // slash-separated, e.g. EFI/BOOT/BOOTX64.EFI
	Data []byte
}

// Fixed identifiers, so two builds of the same inputs are the same bytes.
// Every image shares them; nothing reads them but the firmware's partition
// scan, and the appliance finds its partition by label.
const (
	diskGUID      = "8C6E7A59-4B1C-4F57-9D0A-10F0C0C0E001"
	partitionGUID = "8C6E7A59-4B1C-4F57-9D0A-10F0C0C0E002"
	mbrDiskID     = 0x10f0c0c0
	fatVolumeID   = 0x10f06000
	firstSector   = 2048 // 1 MiB: where partitioning tools start, and SD erase blocks align
	sectorSize    = 512
)

// PartitionScheme chooses the partition table.
type PartitionScheme int

const (
	GPT PartitionScheme = iota // x86 UEFI: an EFI system partition
	MBR                        // Raspberry Pi: its boot ROM reads MBR only
)

// WriteDisk writes a disk image of size bytes to p: one partition from
// sector 2048 to the end, FAT32 labelled IOFOG, holding files and the empty
// directories dirs. Every entry carries mtime.
func WriteDisk(p string, size int64, scheme PartitionScheme, files []File, dirs []string, mtime time.Time) error {
	if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
		return err
	}
	d, err := diskfs.Create(p, size, diskfs.SectorSize512)
	if err != nil {
		return fmt.Errorf("creating disk image %s: %w", p, err)
	}
	if err := fillDisk(d, p, size, scheme, files, dirs, mtime); err != nil {
		d.Close()
		return err
	}
	if err := d.Close(); err != nil {
		return err
	}
	return stampIDs(p, scheme, firstSector*sectorSize)
}

// fillDisk partitions d and writes the file system.
func fillDisk(d *disk.Disk, p string, size int64, scheme PartitionScheme, files []File, dirs []string, mtime time.Time) error {
	var err error
	sectors := size / sectorSize
	switch scheme {
	case GPT:
		last := uint64(sectors) - 34 // the backup GPT takes the last 33 sectors
		err = d.Partition(&gpt.Table{
			LogicalSectorSize: sectorSize, PhysicalSectorSize: sectorSize, ProtectiveMBR: true, GUID: diskGUID,
			Partitions: []*gpt.Partition{{
				Index: 1, Start: firstSector, End: last, Type: gpt.EFISystemPartition,
				Name: "IOFOG", GUID: partitionGUID,
			}},
		})
	case MBR:
		err = d.Partition(&mbr.Table{
			LogicalSectorSize: sectorSize, PhysicalSectorSize: sectorSize,
			Partitions: []*mbr.Partition{{
				Index: 1, Type: mbr.Fat32LBA, Start: firstSector, Size: uint32(sectors - firstSector),
			}},
		})
	}
	if err != nil {
		return fmt.Errorf("partitioning %s: %w", p, err)
	}
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{
		Partition: 1, FSType: filesystem.TypeFat32, VolumeLabel: Label, Reproducible: true,
	})
	if err != nil {
		return fmt.Errorf("creating the FAT32 file system in %s: %w", p, err)
	}
	if err := fillFS(fs, files, dirs, mtime); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

// fillFS writes files and dirs into fs, parents first, in sorted order.
func fillFS(fs filesystem.FileSystem, files []File, dirs []string, mtime time.Time) error {
	all := map[string]bool{}
	for _, dir := range dirs {
		for d := dir; d != "." && d != "/" && d != ""; d = path.Dir(d) {
			all[d] = true
		}
	}
	for _, f := range files {
		for d := path.Dir(f.Path); d != "." && d != "/"; d = path.Dir(d) {
			all[d] = true
		}
	}
	dirList := make([]string, 0, len(all))
	for d := range all {
		dirList = append(dirList, d)
	}
	slices.Sort(dirList)
	for _, d := range dirList {
		if err := fs.Mkdir("/" + d); err != nil {
			return fmt.Errorf("mkdir %s: %w", d, err)
		}
	}
	sorted := slices.Clone(files)
	slices.SortFunc(sorted, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	for _, f := range sorted {
		if err := writeFile(fs, "/"+f.Path, f.Data); err != nil {
			return err
		}
	}
	for _, d := range dirList {
		if err := fs.Chtimes("/"+d, mtime, mtime, mtime); err != nil {
			return fmt.Errorf("setting the time of %s: %w", d, err)
		}
	}
	for _, f := range sorted {
		if err := fs.Chtimes("/"+f.Path, mtime, mtime, mtime); err != nil {
			return fmt.Errorf("setting the time of %s: %w", f.Path, err)
		}
	}
	return nil
}

func writeFile(fs filesystem.FileSystem, p string, data []byte) error {
	f, err := fs.OpenFile(p, os.O_CREATE|os.O_RDWR|os.O_TRUNC)
	if err != nil {
		return fmt.Errorf("creating %s: %w", p, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", p, err)
	}
	return f.Close()
}

// stampIDs writes the fixed MBR disk signature and FAT volume ID (go-diskfs
// leaves them zero or random).
func stampIDs(p string, scheme PartitionScheme, partStart int64) error {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	var b [4]byte
	if scheme == MBR {
		binary.LittleEndian.PutUint32(b[:], mbrDiskID)
		if _, err := f.WriteAt(b[:], 440); err != nil {
			return err
		}
	}
	// BS_VolID of the FAT32 boot sector and of its backup in sector 6.
	binary.LittleEndian.PutUint32(b[:], fatVolumeID)
	for _, sec := range []int64{0, 6} {
		if _, err := f.WriteAt(b[:], partStart+sec*sectorSize+0x43); err != nil {
			return err
		}
	}
	return f.Close()
}

// ReadFiles opens the image at p read-only and returns the boot partition's
// file system, for reading files back.
func OpenBootFS(p string, writable bool) (filesystem.FileSystem, func() error, error) {
	mode := diskfs.ReadOnly
	if writable {
		mode = diskfs.ReadWrite
	}
	d, err := diskfs.Open(p, diskfs.WithOpenMode(mode), diskfs.WithSectorSize(diskfs.SectorSize512))
	if err != nil {
		return nil, nil, fmt.Errorf("opening image %s: %w", p, err)
	}
	fs, err := d.GetFilesystem(1)
	if err != nil {
		d.Close()
		return nil, nil, fmt.Errorf("image %s: no FAT file system on partition 1: %w", p, err)
	}
	if got := strings.TrimSpace(fs.Label()); got != Label {
		d.Close()
		return nil, nil, fmt.Errorf("image %s: partition 1 is labelled %q, not %q: not an iofog-connector image", p, got, Label)
	}
	return fs, d.Close, nil
}

// ReadBootFile returns one file of the boot partition of the image at p.
func ReadBootFile(p, name string) ([]byte, error) {
	fs, closeDisk, err := OpenBootFS(p, false)
	if err != nil {
		return nil, err
	}
	defer closeDisk()
	f, err := fs.OpenFile("/"+name, os.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("image %s: %s: %w", p, name, err)
	}
	defer f.Close()
	return io.ReadAll(f)
}
