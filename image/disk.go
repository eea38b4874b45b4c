package image

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"
)

// File is one file on a FAT partition.
type File struct {
	Path string // slash-separated, e.g. EFI/BOOT/BOOTX64.EFI
	Data []byte
}

// Contents is what goes on one FAT partition.
type Contents struct {
	Files []File
	Dirs  []string // empty directories
}

// Fixed identifiers, so two builds of the same inputs are the same bytes.
// Every image shares them; nothing reads them but the firmware's partition
// scan, and the appliance finds its partitions by label.
const (
	diskGUID    = "8C6E7A59-4B1C-4F57-9D0A-10F0C0C0E001"
	mbrDiskID   = 0x10f0c0c0
	fatVolumeID = 0x10f06000
	dataUUID    = "8c6e7a59-4b1c-4f57-9d0a-10f0c0c0ed00"
	firstSector = 2048 // 1 MiB: where partitioning tools start, and SD erase blocks align
	sectorSize  = 512
)

// partitionGUID is partition i's (0-based) fixed GUID. The first one is
// what images had when they had a single partition.
func partitionGUID(i int) string { return fmt.Sprintf("8C6E7A59-4B1C-4F57-9D0A-10F0C0C0E%03X", i+2) }

// PartitionScheme chooses the partition table.
type PartitionScheme int

const (
	GPT PartitionScheme = iota // x86 UEFI
	MBR                        // Raspberry Pi: its boot ROM reads MBR only
)

// extent is where a partition lies in the image, in bytes.
type extent struct{ off, size int64 }

// extents lays the partitions out one after the other from 1 MiB.
func (l Layout) extents() []extent {
	out := make([]extent, len(l.Partitions))
	off := int64(firstSector * sectorSize)
	for i, p := range l.Partitions {
		out[i] = extent{off, p.Size}
		off += p.Size
	}
	return out
}

// WriteDisk writes a disk image of size bytes to p with the partitions of
// layout, FAT partitions filled from contents (by index; nil for none) and
// the ext4 data partition empty. Every FAT entry carries mtime. The space
// after the last partition stays free: the appliance grows the data
// partition into it (and to the end of a larger card) on first boot.
func WriteDisk(p string, size int64, layout Layout, contents []*Contents, mtime time.Time) error {
	ext := layout.extents()
	if end := ext[len(ext)-1].off + ext[len(ext)-1].size; end > size-34*sectorSize {
		return fmt.Errorf("partitions end at %d bytes, past the %d-byte disk (less the backup GPT)", end, size)
	}
	if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
		return err
	}
	d, err := diskfs.Create(p, size, diskfs.SectorSize512)
	if err != nil {
		return fmt.Errorf("creating disk image %s: %w", p, err)
	}
	if err := fillDisk(d, p, layout, contents, mtime); err != nil {
		d.Close()
		return err
	}
	if err := d.Close(); err != nil {
		return err
	}
	if layout.Scheme == MBR {
		if err := writeAt(p, 440, le32(mbrDiskID)); err != nil {
			return err
		}
	}
	for i, part := range layout.Partitions {
		switch part.FS {
		case FAT32:
			if err := fixFAT(p, ext[i].off, uint32(fatVolumeID+i)); err != nil {
				return fmt.Errorf("%s: partition %d: %w", p, i+1, err)
			}
		case Ext4:
			if err := makeExt4(p, ext[i], part.Label, mtime); err != nil {
				return fmt.Errorf("%s: partition %d: %w", p, i+1, err)
			}
		}
	}
	return nil
}

// fillDisk partitions d and writes the FAT file systems.
func fillDisk(d *disk.Disk, p string, layout Layout, contents []*Contents, mtime time.Time) error {
	ext := layout.extents()
	var err error
	switch layout.Scheme {
	case GPT:
		t := &gpt.Table{LogicalSectorSize: sectorSize, PhysicalSectorSize: sectorSize, ProtectiveMBR: true, GUID: diskGUID}
		for i, part := range layout.Partitions {
			start := uint64(ext[i].off / sectorSize)
			t.Partitions = append(t.Partitions, &gpt.Partition{
				Index: i + 1, Start: start, End: start + uint64(ext[i].size/sectorSize) - 1,
				Type: part.GPTType, Name: part.Name, GUID: partitionGUID(i),
			})
		}
		err = d.Partition(t)
	case MBR:
		t := &mbr.Table{LogicalSectorSize: sectorSize, PhysicalSectorSize: sectorSize}
		for i, part := range layout.Partitions {
			t.Partitions = append(t.Partitions, &mbr.Partition{
				Index: i + 1, Type: part.MBRType, Start: uint32(ext[i].off / sectorSize), Size: uint32(ext[i].size / sectorSize),
			})
		}
		err = d.Partition(t)
	}
	if err != nil {
		return fmt.Errorf("partitioning %s: %w", p, err)
	}
	for i, part := range layout.Partitions {
		if part.FS != FAT32 {
			continue
		}
		fs, err := d.CreateFilesystem(disk.FilesystemSpec{
			Partition: i + 1, FSType: filesystem.TypeFat32, VolumeLabel: part.Label, Reproducible: true,
		})
		if err != nil {
			return fmt.Errorf("creating the FAT32 file system %s in %s: %w", part.Label, p, err)
		}
		if i < len(contents) && contents[i] != nil {
			if err := fillFS(fs, contents[i].Files, contents[i].Dirs, mtime); err != nil {
				return fmt.Errorf("%s: %s: %w", p, part.Label, err)
			}
		}
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

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func writeAt(p string, off int64, b []byte) error {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(b, off); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// makeExt4 makes the data partition: ext4 with a journal, 4 KiB blocks
// (the kernel grows it online; resize_inode reserves descriptor blocks for
// that, and the kernel switches to meta_bg past them), made by e2fsprogs'
// mke2fs in a temporary file and copied in. Fixed UUID, hash seed and time
// keep builds reproducible.
func makeExt4(img string, e extent, label string, mtime time.Time) error {
	mke2fs, err := lookTool("mke2fs")
	if err != nil {
		return fmt.Errorf("making the ext4 data partition: %w (apt-get install e2fsprogs)", err)
	}
	tmp, err := os.CreateTemp("", "mkimage-ext4-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := tmp.Truncate(e.size); err != nil {
		return err
	}
	cmd := exec.Command(mke2fs, "-q", "-F", "-t", "ext4", "-b", "4096", "-i", "16384", "-m", "1",
		"-L", label, "-U", dataUUID,
		"-O", "has_journal,extent,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize,resize_inode,sparse_super,large_file,filetype,dir_index",
		"-E", "hash_seed="+dataUUID+",root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,resize="+strconv.FormatInt((1<<40)/4096, 10),
		tmp.Name())
	cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME="+strconv.FormatInt(mtime.Unix(), 10), "MKE2FS_CONFIG=/dev/null")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mke2fs: %w: %s", err, out)
	}
	out, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer out.Close()
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := out.Seek(e.off, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.CopyN(out, tmp, e.size); err != nil {
		return fmt.Errorf("copying the ext4 file system into the image: %w", err)
	}
	return out.Close()
}

// lookTool finds a program that may live in sbin, which a non-root PATH
// often lacks.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := dir + "/" + name
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// fixFAT corrects what go-diskfs writes and fsck.fat (and Windows' and
// macOS's checkers) reject: the ".." entry of a first-level directory
// points at the root's cluster instead of 0, and the FSInfo free-cluster
// count is not kept. It also stamps the fixed volume ID.
func fixFAT(img string, off int64, volID uint32) error {
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	v, err := readFAT(f, off)
	if err != nil {
		return err
	}
	// BS_VolID, in the boot sector and its backup.
	for _, sec := range []int64{0, int64(v.backupBoot)} {
		if _, err := f.WriteAt(le32(volID), off+sec*int64(v.bps)+0x43); err != nil {
			return err
		}
	}
	// The free-cluster count and next-free hint in FSInfo, as the FAT has
	// them (go-diskfs leaves them stale): checkers compare the two.
	free, nextFree, err := v.freeClusters(f)
	if err != nil {
		return err
	}
	for _, sec := range []int64{int64(v.fsInfo), int64(v.backupBoot) + int64(v.fsInfo)} {
		var sig [4]byte
		if _, err := f.ReadAt(sig[:], off+sec*int64(v.bps)); err != nil {
			return err
		}
		if binary.LittleEndian.Uint32(sig[:]) != 0x41615252 {
			continue
		}
		if _, err := f.WriteAt(slices.Concat(le32(free), le32(nextFree)), off+sec*int64(v.bps)+488); err != nil {
			return err
		}
	}
	entries, err := v.dirEntries(f, v.rootCluster)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.attr&0x10 == 0 || e.name[0] == '.' || e.cluster < 2 {
			continue
		}
		// ".." is the second entry of the directory's first cluster.
		at := v.clusterOffset(e.cluster) + 32
		var dd [32]byte
		if _, err := f.ReadAt(dd[:], at); err != nil {
			return err
		}
		if string(dd[:11]) != "..         " {
			return fmt.Errorf("directory %q: second entry is not \"..\"", strings.TrimSpace(string(e.name[:])))
		}
		binary.LittleEndian.PutUint16(dd[20:], 0)
		binary.LittleEndian.PutUint16(dd[26:], 0)
		if _, err := f.WriteAt(dd[:], at); err != nil {
			return err
		}
	}
	return f.Close()
}

// refixFAT runs fixFAT again on the FAT labelled label of the image at p,
// after go-diskfs changed it.
func refixFAT(p, label string) error {
	off, _, err := PartitionExtent(p, label)
	if err != nil {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	var id [4]byte
	_, err = f.ReadAt(id[:], off+0x43)
	f.Close()
	if err != nil {
		return err
	}
	if err := reclaimClusters(p, off); err != nil {
		return err
	}
	return fixFAT(p, off, binary.LittleEndian.Uint32(id[:]))
}

// reclaimClusters frees, in every FAT copy, the clusters that no directory
// entry reaches: go-diskfs marks a removed file's entry deleted but leaves
// its cluster chain allocated.
func reclaimClusters(p string, off int64) error {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	v, err := readFAT(f, off)
	if err != nil {
		return err
	}
	n := v.clusters(v.totalSectors)
	fatBytes := int64(v.fatSize) * int64(v.bps)
	fat := make([]byte, fatBytes)
	fatOff := off + int64(v.reserved)*int64(v.bps)
	if _, err := f.ReadAt(fat, fatOff); err != nil {
		return err
	}
	used := map[uint32]bool{}
	chain := func(c uint32) {
		for steps := uint32(0); c >= 2 && c < n+2 && !used[c] && steps <= n; steps++ {
			used[c] = true
			c = binary.LittleEndian.Uint32(fat[4*c:]) & 0x0fffffff
		}
	}
	var walk func(c uint32, depth int) error
	walk = func(c uint32, depth int) error {
		if depth > 32 {
			return errors.New("directories nest too deep")
		}
		chain(c)
		entries, err := v.dirEntries(f, c)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.name[0] == '.' {
				continue
			}
			if e.attr&0x10 != 0 {
				if err := walk(e.cluster, depth+1); err != nil {
					return err
				}
				continue
			}
			chain(e.cluster)
		}
		return nil
	}
	if err := walk(v.rootCluster, 0); err != nil {
		return err
	}
	changed := false
	for c := uint32(2); c < n+2; c++ {
		if !used[c] && binary.LittleEndian.Uint32(fat[4*c:])&0x0fffffff != 0 {
			binary.LittleEndian.PutUint32(fat[4*c:], binary.LittleEndian.Uint32(fat[4*c:])&0xf0000000)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	for i := range int64(v.fats) {
		if _, err := f.WriteAt(fat, fatOff+i*fatBytes); err != nil {
			return err
		}
	}
	return f.Close()
}

// fatVolume is the geometry of a FAT32 file system at off in a file.
type fatVolume struct {
	off                       int64
	bps, spc                  uint32
	reserved, fatSize, fats   uint32
	rootCluster, totalSectors uint32
	fsInfo, backupBoot        uint16
}

func readFAT(r io.ReaderAt, off int64) (*fatVolume, error) {
	var bs [512]byte
	if _, err := r.ReadAt(bs[:], off); err != nil {
		return nil, err
	}
	if bs[510] != 0x55 || bs[511] != 0xaa || binary.LittleEndian.Uint16(bs[22:]) != 0 {
		return nil, errors.New("not a FAT32 file system")
	}
	v := &fatVolume{
		off: off, bps: uint32(binary.LittleEndian.Uint16(bs[11:])), spc: uint32(bs[13]),
		reserved: uint32(binary.LittleEndian.Uint16(bs[14:])), fats: uint32(bs[16]),
		fatSize: binary.LittleEndian.Uint32(bs[36:]), rootCluster: binary.LittleEndian.Uint32(bs[44:]),
		fsInfo: binary.LittleEndian.Uint16(bs[48:]), backupBoot: binary.LittleEndian.Uint16(bs[50:]),
		totalSectors: binary.LittleEndian.Uint32(bs[32:]),
	}
	if v.bps == 0 || v.spc == 0 {
		return nil, errors.New("FAT32 boot sector has no geometry")
	}
	return v, nil
}

// clusters is the number of data clusters.
func (v *fatVolume) clusters(total uint32) uint32 {
	return (total - v.reserved - v.fats*v.fatSize) / v.spc
}

// freeClusters counts the free entries of the first FAT and returns the
// first free cluster (0xFFFFFFFF when none).
func (v *fatVolume) freeClusters(r io.ReaderAt) (free, first uint32, err error) {
	n := v.clusters(v.totalSectors)
	fat := make([]byte, 4*(int64(n)+2))
	if _, err := r.ReadAt(fat, v.off+int64(v.reserved)*int64(v.bps)); err != nil {
		return 0, 0, err
	}
	first = 0xffffffff
	for c := uint32(2); c < n+2; c++ {
		if binary.LittleEndian.Uint32(fat[4*c:])&0x0fffffff == 0 {
			if first == 0xffffffff {
				first = c
			}
			free++
		}
	}
	return free, first, nil
}

func (v *fatVolume) clusterOffset(c uint32) int64 {
	first := v.reserved + v.fats*v.fatSize
	return v.off + int64(first+(c-2)*v.spc)*int64(v.bps)
}

func (v *fatVolume) next(r io.ReaderAt, c uint32) (uint32, error) {
	var b [4]byte
	if _, err := r.ReadAt(b[:], v.off+int64(v.reserved)*int64(v.bps)+int64(c)*4); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b[:]) & 0x0fffffff, nil
}

// fatEntry is a short directory entry.
type fatEntry struct {
	name    [11]byte
	attr    byte
	cluster uint32
	size    uint32
}

// dirEntries lists the short entries of the directory starting at cluster c.
func (v *fatVolume) dirEntries(r io.ReaderAt, c uint32) ([]fatEntry, error) {
	var out []fatEntry
	clusterBytes := int(v.spc * v.bps)
	for n := 0; c >= 2 && c < 0x0ffffff8; n++ {
		if n > 1<<16 {
			return nil, errors.New("directory cluster chain loops")
		}
		buf := make([]byte, clusterBytes)
		if _, err := r.ReadAt(buf, v.clusterOffset(c)); err != nil {
			return nil, err
		}
		for i := 0; i+32 <= len(buf); i += 32 {
			d := buf[i : i+32]
			if d[0] == 0 {
				return out, nil
			}
			if d[0] == 0xe5 || d[11] == 0x0f || d[11]&0x08 != 0 {
				continue
			}
			var e fatEntry
			copy(e.name[:], d[:11])
			e.attr = d[11]
			e.cluster = uint32(binary.LittleEndian.Uint16(d[20:]))<<16 | uint32(binary.LittleEndian.Uint16(d[26:]))
			e.size = binary.LittleEndian.Uint32(d[28:])
			out = append(out, e)
		}
		var err error
		if c, err = v.next(r, c); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// OpenFS opens the FAT labelled label in the image at p, for reading files
// back (or changing them, when writable).
func OpenFS(p, label string, writable bool) (filesystem.FileSystem, func() error, error) {
	mode := diskfs.ReadOnly
	if writable {
		mode = diskfs.ReadWrite
	}
	d, err := diskfs.Open(p, diskfs.WithOpenMode(mode), diskfs.WithSectorSize(diskfs.SectorSize512))
	if err != nil {
		return nil, nil, fmt.Errorf("opening image %s: %w", p, err)
	}
	t, err := d.GetPartitionTable()
	if err != nil {
		d.Close()
		return nil, nil, fmt.Errorf("image %s: no partition table: %w", p, err)
	}
	var seen []string
	for i := range t.GetPartitions() {
		fs, err := d.GetFilesystem(i + 1)
		if err != nil || fs.Type() != filesystem.TypeFat32 {
			continue
		}
		got := strings.TrimSpace(fs.Label())
		if strings.EqualFold(got, label) {
			return fs, d.Close, nil
		}
		seen = append(seen, strconv.Quote(got))
	}
	d.Close()
	return nil, nil, fmt.Errorf("image %s: no FAT partition labelled %q (found %s): not an iofog-connector image of this version", p, label, strings.Join(seen, ", "))
}

// OpenBootFS opens the image's config partition (the FAT labelled IOFOG).
func OpenBootFS(p string, writable bool) (filesystem.FileSystem, func() error, error) {
	return OpenFS(p, Label, writable)
}

// ReadFile returns one file of the FAT labelled label in the image at p.
func ReadFile(p, label, name string) ([]byte, error) {
	fs, closeDisk, err := OpenFS(p, label, false)
	if err != nil {
		return nil, err
	}
	defer closeDisk()
	f, err := fs.OpenFile("/"+name, os.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("image %s: %s: %s: %w", p, label, name, err)
	}
	defer f.Close()
	return io.ReadAll(f)
}

// ReadBootFile returns one file of the config partition (IOFOG) of the
// image at p; on the Pi that is also where the firmware and kernel are.
func ReadBootFile(p, name string) ([]byte, error) { return ReadFile(p, Label, name) }

// PartitionExtent returns where the partition labelled label lies in the
// image at p (offset and size in bytes), from the board layout the image
// was built with.
func PartitionExtent(p, label string) (off, size int64, err error) {
	d, err := diskfs.Open(p, diskfs.WithOpenMode(diskfs.ReadOnly), diskfs.WithSectorSize(diskfs.SectorSize512))
	if err != nil {
		return 0, 0, fmt.Errorf("opening image %s: %w", p, err)
	}
	defer d.Close()
	t, err := d.GetPartitionTable()
	if err != nil {
		return 0, 0, fmt.Errorf("image %s: no partition table: %w", p, err)
	}
	f, err := os.Open(p)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	for _, part := range t.GetPartitions() {
		start, sz := part.GetStart(), part.GetSize()
		if l, err := labelAt(f, start); err == nil && strings.EqualFold(l, label) {
			return start, sz, nil
		}
	}
	return 0, 0, fmt.Errorf("image %s: %w %s", p, ErrNoPartition, label)
}

// extractPartition copies the partition labelled label of the image at p
// into a temporary file (the caller removes it).
func extractPartition(p, label string) (*os.File, error) {
	off, size, err := PartitionExtent(p, label)
	if err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp("", "iofog-part-")
	if err != nil {
		return nil, err
	}
	in, err := os.Open(p)
	if err == nil {
		_, err = io.Copy(tmp, io.NewSectionReader(in, off, size))
		in.Close()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp.Name())
		return nil, err
	}
	return tmp, nil
}

// ReadDataFile returns the file name (e.g. "state/configs.json") of the
// ext4 data partition of the image at p, read with e2fsprogs' debugfs
// (read-only, on a copy).
func ReadDataFile(p, name string) ([]byte, error) {
	tmp, err := extractPartition(p, DataLabel)
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	prog, err := lookTool("debugfs")
	if err != nil {
		return nil, fmt.Errorf("%w (apt-get install e2fsprogs)", err)
	}
	cmd := exec.Command(prog, "-R", "cat /"+strings.TrimPrefix(name, "/"), tmp.Name())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("debugfs: %w: %s", err, stderr.String())
	}
	if msg := stderr.String(); strings.Contains(msg, "not found") || strings.Contains(msg, "No such") {
		return nil, fmt.Errorf("image %s: data partition: %s: %w", p, name, fs.ErrNotExist)
	}
	return out, nil
}

// ErrNoPartition is PartitionExtent's error for a label not in the image.
var ErrNoPartition = errors.New("no partition labelled")

// CheckPartition copies the partition labelled label out of the image at p
// and runs the host's checker on it, read-only: fsck.fat -n for a FAT,
// e2fsck -fn for ext4. It returns the checker's output, and an error when
// the checker found anything (for FAT: any line beyond its banner and
// summary, save the dirty bit a power cut leaves).
func CheckPartition(p, label string) (string, error) {
	tmp, err := extractPartition(p, label)
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	isExt4 := isExt4Label(tmp.Name())
	tool, args := "fsck.fat", []string{"-n", tmp.Name()}
	if isExt4 {
		tool, args = "e2fsck", []string{"-fn", tmp.Name()}
	}
	prog, err := lookTool(tool)
	if err != nil {
		return "", fmt.Errorf("%w (apt-get install dosfstools e2fsprogs)", err)
	}
	outB, runErr := exec.Command(prog, args...).CombinedOutput()
	out := strings.ReplaceAll(string(outB), tmp.Name(), label)
	if isExt4 {
		if runErr != nil {
			return out, fmt.Errorf("e2fsck -fn found problems: %v", runErr)
		}
		return out, nil
	}
	var problems []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "fsck.fat "), strings.HasPrefix(l, label+": "), l == "":
		// What a power cut while the FAT is writable leaves: Linux's dirty
		// flag, in the boot sector's byte 65 (so it differs from the
		// backup there, and only there) and fsck.fat's dirty bit.
		case l == "There are differences between boot sector and its backup.",
			strings.HasPrefix(l, "This is mostly harmless. Differences:"),
			l == "65:01/00", l == "Not automatically fixing this.",
			strings.Contains(l, "Dirty bit is set"), strings.Contains(l, "dirty bit"),
			l == "Leaving filesystem unchanged.":
		default:
			problems = append(problems, l)
		}
	}
	if len(problems) > 0 {
		return out, fmt.Errorf("fsck.fat -n: %s", strings.Join(problems, "; "))
	}
	return out, nil
}

func isExt4Label(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	var b [2]byte
	if _, err := f.ReadAt(b[:], 1024+0x38); err != nil {
		return false
	}
	return binary.LittleEndian.Uint16(b[:]) == 0xef53
}

// labelAt reads the label of a FAT32 or ext4 file system at off.
func labelAt(r io.ReaderAt, off int64) (string, error) {
	var b [2048]byte
	if _, err := r.ReadAt(b[:], off); err != nil {
		return "", err
	}
	if binary.LittleEndian.Uint16(b[1024+0x38:]) == 0xef53 {
		return strings.TrimRight(string(b[1024+0x78:1024+0x88]), "\x00"), nil
	}
	if b[510] == 0x55 && b[511] == 0xaa && b[66] == 0x29 {
		return strings.TrimRight(string(b[71:82]), " "), nil
	}
	return "", errors.New("no known file system")
}
