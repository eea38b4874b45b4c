package image

import (
	"bytes"
	"context"
	"debug/pe"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"
	"github.com/eclipse-iofog/iofog-connector/internal/testenv"
	"github.com/eclipse-iofog/iofog-connector/kmod"
	"github.com/eclipse-iofog/iofog-connector/schema"
	"github.com/klauspost/compress/gzip"
	"github.com/u-root/u-root/pkg/cpio"
)

// requireCache returns the kernel cache, failing (run make fetch) when it is
// missing unless IOFOG_SKIP_QEMU=1, the switch for everything that needs the
// fetched kernels.
func requireCache(t *testing.T) string {
	t.Helper()
	dir, err := DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (Cache{Dir: dir}).Manifest(); err != nil {
		testenv.Missing(t, testenv.SkipQEMU, err.Error())
	}
	return dir
}

func validate(name string, data []byte) error {
	_, err := schema.LoadBytes(name, data)
	return err
}

// build builds board's image with a stand-in /init (these tests read the
// image back; they do not boot it).
func build(t *testing.T, board, out string, epoch time.Time) (*Result, []byte) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "init")
	content := []byte("stand-in init for " + board)
	if err := os.WriteFile(bin, content, 0o755); err != nil {
		t.Fatal(err)
	}
	res, err := Build(context.Background(), Options{Board: board, Out: out, Binary: bin, CacheDir: requireCache(t),
		Validate: validate, Epoch: epoch})
	if err != nil {
		t.Fatal(err)
	}
	return res, content
}

func bootFiles(t *testing.T, img string) []string {
	t.Helper()
	fs, closeDisk, err := OpenBootFS(img, false)
	if err != nil {
		t.Fatal(err)
	}
	defer closeDisk()
	ents, err := fs.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestX86ImageReadBack(t *testing.T) {
	img := filepath.Join(t.TempDir(), "x86.img")
	res, bin := build(t, "x86_64", img, time.Unix(1700000000, 0))

	d, err := diskfs.Open(img, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	g, ok := pt.(*gpt.Table)
	if !ok || len(g.Partitions) != 3 {
		t.Fatalf("x86 image partition table is %T; want GPT with three partitions", pt)
	}
	// The ESP for the firmware, a basic-data FAT every OS mounts for the
	// user, the ext4 data partition last (it grows into the rest).
	for i, want := range []gpt.Type{gpt.EFISystemPartition, gpt.MicrosoftBasicData, gpt.LinuxFilesystem} {
		if p := g.Partitions[i]; p.Type != want {
			t.Errorf("partition %d is type %s; want %s", i+1, p.Type, want)
		}
	}
	if g.Partitions[0].Start != 2048 {
		t.Errorf("partition 1 starts at sector %d; want 2048", g.Partitions[0].Start)
	}
	names := bootFiles(t, img)
	for _, want := range []string{"connector.cue", "tls", StatusFile} {
		if !slices.Contains(names, want) {
			t.Errorf("IOFOG partition has %v; want %s", names, want)
		}
	}
	if slices.Contains(names, "EFI") || slices.Contains(names, "state") {
		t.Errorf("IOFOG partition has %v; the UKI belongs on the ESP and state on the data partition", names)
	}
	checkPartitions(t, img)

	uki, err := ReadFile(img, ESPLabel, UKIPath)
	if err != nil {
		t.Fatal(err)
	}
	f, err := pe.NewFile(bytes.NewReader(uki))
	if err != nil {
		t.Fatalf("%s is not a PE file: %v", UKIPath, err)
	}
	sec := func(name string) []byte {
		s := f.Section(name)
		if s == nil {
			t.Fatalf("UKI has no %s section", name)
		}
		b, err := s.Data()
		if err != nil {
			t.Fatal(err)
		}
		return b[:s.VirtualSize]
	}
	if cl := string(sec(".cmdline")); !strings.Contains(cl, "console=ttyS0") || !strings.Contains(cl, "panic=10") {
		t.Errorf("UKI command line %q; want console=ttyS0 and panic=10", cl)
	}
	kernel, err := os.ReadFile(res.Kernel.Image)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sec(".linux"), kernel) {
		t.Error("UKI .linux is not the Debian kernel")
	}
	checkInitramfs(t, sec(".initrd"), bin, []string{"virtio_net", "virtio_blk", "e1000e", "ahci", "nvme"})
}

// checkInitramfs reads the initramfs back: /init is our binary, the device
// nodes are there, and the module index names files that are there.
func checkInitramfs(t *testing.T, data, bin []byte, drivers []string) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("initramfs is not gzip: %v", err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatalf("initramfs is not a newc cpio: %v", err)
	}
	files := map[string]cpio.Record{}
	var prev string
	for _, r := range recs {
		if r.Name < prev {
			t.Errorf("initramfs not sorted: %s after %s", r.Name, prev)
		}
		prev = r.Name
		if r.MTime != 0 || r.UID != 0 {
			t.Errorf("%s carries mtime %d uid %d; want 0", r.Name, r.MTime, r.UID)
		}
		files[r.Name] = r
	}
	read := func(name string) []byte {
		r, ok := files[name]
		if !ok {
			t.Fatalf("initramfs has no %s", name)
		}
		b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if init := read("init"); !bytes.Equal(init, bin) || files["init"].Mode&0o111 == 0 {
		t.Error("/init is not the binary, or not executable")
	}
	for name, dev := range map[string][2]uint64{"dev/console": {5, 1}, "dev/null": {1, 3}} {
		r := files[name]
		if r.Mode&cpio.S_IFMT != cpio.S_IFCHR || r.Rmajor != dev[0] || r.Rminor != dev[1] {
			t.Errorf("%s: mode %o rdev %d:%d; want character device %d:%d", name, r.Mode, r.Rmajor, r.Rminor, dev[0], dev[1])
		}
	}
	ix, err := kmod.ReadIndex(bytes.NewReader(read(strings.TrimPrefix(kmod.IndexFile, "/"))))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ix.Modules {
		if _, ok := files["lib/modules/"+m.File]; !ok {
			t.Errorf("index names %s at %s, not in the initramfs", m.Name, m.File)
		}
	}
	for _, want := range []string{"vfat", "nls_cp437", "nls_ascii", "ext4", "jbd2", "crc32c_generic", "nf_tables", "nft_ct", "nft_masq"} {
		if !slices.Contains(ix.Load, want) {
			t.Errorf("boot load list %v lacks %s", ix.Load, want)
		}
	}
	for _, want := range drivers {
		if _, ok := ix.Module(want); !ok {
			t.Errorf("initramfs lacks driver %s", want)
		}
	}
}

func TestRaspberryPiImageReadBack(t *testing.T) {
	img := filepath.Join(t.TempDir(), "rpi.img")
	_, bin := build(t, "rpi", img, time.Unix(1700000000, 0))

	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.Size(); n&(n-1) != 0 {
		t.Errorf("SD image is %d bytes; QEMU's SD card wants a power of two", n)
	}
	d, err := diskfs.Open(img, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := d.GetPartitionTable()
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	m, ok := pt.(*mbr.Table)
	if !ok || len(m.Partitions) == 0 {
		t.Fatalf("Pi image partition table is %T; want MBR (the Pi's boot ROM reads nothing else)", pt)
	}
	if p := m.Partitions[0]; p.Type != mbr.Fat32LBA || p.Start != 2048 {
		t.Errorf("partition 1 is type %#x at %d; want FAT32 LBA (0x0c) at 2048", p.Type, p.Start)
	}
	used := 0
	for _, p := range m.Partitions {
		if p.Type != mbr.Empty {
			used++
		}
	}
	if used != 2 || m.Partitions[1].Type != mbr.Linux {
		t.Errorf("Pi image has %d partitions; want the FAT and a Linux (0x83) data partition", used)
	}
	checkPartitions(t, img)
	names := bootFiles(t, img)
	for _, want := range []string{"bootcode.bin", "start.elf", "fixup.dat", "start4.elf", "fixup4.dat",
		"A", "config.txt", "tryboot.txt", "cmdline.txt", "connector.cue", "tls", StatusFile} {
		if !slices.Contains(names, want) {
			t.Errorf("boot partition has %v; want %s", names, want)
		}
	}
	cfg, err := ReadBootFile(img, "config.txt")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"arm_64bit=1", "enable_uart=1", "upstream_kernel=1", "os_prefix=A/", "kernel=vmlinuz", "initramfs initrd.gz followkernel"} {
		if !strings.Contains(string(cfg), want+"\n") {
			t.Errorf("config.txt lacks %q:\n%s", want, cfg)
		}
	}
	cl, err := ReadBootFile(img, "cmdline.txt")
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(string(cl)), "\n"); len(lines) != 1 ||
		!strings.Contains(lines[0], "console=ttyAMA0") || !strings.Contains(lines[0], "console=ttyS1") {
		t.Errorf("cmdline.txt %q; want one line with console=ttyAMA0 and console=ttyS1", cl)
	}
	initrd, err := ReadBootFile(img, RaspiInitrd)
	if err != nil {
		t.Fatal(err)
	}
	checkInitramfs(t, initrd, bin, []string{"sdhci_iproc", "dwc2", "smsc95xx", "lan78xx", "genet", "bcm2835_wdt", "bcm2835_rng", "cdc_ether"})
}

// checkPartitions runs the host's file-system checkers on each partition
// of the image, as a user's laptop would: fsck.fat -n on the FATs (no
// complaint at all), e2fsck -fn on the data partition; and STATUS.txt is
// there at its fixed size.
func checkPartitions(t *testing.T, img string) {
	t.Helper()
	for _, label := range []string{ESPLabel, Label, DataLabel} {
		out, err := CheckPartition(img, label)
		if errors.Is(err, ErrNoPartition) && label == ESPLabel {
			continue // the Pi has no ESP
		}
		if err != nil {
			t.Errorf("%s: %v\n%s", label, err, out)
		}
	}
	st, err := ReadBootFile(img, StatusFile)
	if err != nil || len(st) != StatusSize {
		t.Errorf("STATUS.txt is %d bytes (%v); want it made at %d", len(st), err, StatusSize)
	}
}

func TestBuildIsReproducible(t *testing.T) {
	// go-diskfs stamps new directories' "." entries from SOURCE_DATE_EPOCH.
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	dir := t.TempDir()
	a, _ := build(t, "x86_64", filepath.Join(dir, "a.img"), time.Time{})
	time.Sleep(2100 * time.Millisecond) // past FAT's 2-second time resolution
	b, _ := build(t, "x86_64", filepath.Join(dir, "b.img"), time.Time{})
	da, err := os.ReadFile(a.Image)
	if err != nil {
		t.Fatal(err)
	}
	db, err := os.ReadFile(b.Image)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(da, db) {
		i := 0
		for i < len(da) && i < len(db) && da[i] == db[i] {
			i++
		}
		t.Fatalf("two builds of the same inputs differ (first at byte %#x)", i)
	}
}

func TestRewriteConfig(t *testing.T) {
	img := filepath.Join(t.TempDir(), "x86.img")
	build(t, "x86_64", img, time.Unix(1700000000, 0))
	dir := t.TempDir()

	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"ports":["6000-6050"],"broker":"twelve"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := RewriteConfig(context.Background(), img, bad, validate); err == nil || !strings.Contains(err.Error(), "bad.json") {
		t.Errorf("an invalid config gave %v; want an error naming the file", err)
	}
	if names := bootFiles(t, img); !slices.Contains(names, "connector.cue") {
		t.Errorf("a rejected config changed the image: %v", names)
	}

	good := filepath.Join(dir, "mine.json")
	content := `{"ports":["7000-7010"],"exclude":[],"broker":12345,"address":"127.0.0.1","dev":true}` + "\n"
	if err := os.WriteFile(good, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := RewriteConfig(context.Background(), img, good, validate); err != nil {
		t.Fatal(err)
	}
	names := bootFiles(t, img)
	if slices.Contains(names, "connector.cue") || !slices.Contains(names, "iofog-connector.conf") {
		t.Errorf("after the rewrite the boot partition has %v; want iofog-connector.conf and no connector.cue", names)
	}
	got, err := ReadBootFile(img, "iofog-connector.conf")
	if err != nil || string(got) != content {
		t.Errorf("config on the image is %q, %v; want %q", got, err, content)
	}
	if _, err := ReadFile(img, ESPLabel, UKIPath); err != nil {
		t.Errorf("the rewrite damaged the boot files: %v", err)
	}
	// The old file's clusters are freed: the FAT is as clean as when built.
	checkPartitions(t, img)
	if _, err := RewriteConfig(context.Background(), img, filepath.Join(dir, "config.txt"), validate); err == nil || errors.Is(err, os.ErrNotExist) {
		t.Errorf("config.txt as the config name gave %v; want a refusal by name", err)
	}
}

// CheckPartition is what the power-cut tests trust: it must let through the
// dirty flag a cut leaves while the FAT is writable, and catch what a cut
// used to leave (a file whose clusters the FAT marks free).
func TestCheckPartition(t *testing.T) {
	img := filepath.Join(t.TempDir(), "x86.img")
	build(t, "x86_64", img, time.Unix(1700000000, 0))
	off, _, err := PartitionExtent(img, Label)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Linux's "mounted, not cleanly unmounted" flag in the boot sector.
	if _, err := f.WriteAt([]byte{1}, off+0x41); err != nil {
		t.Fatal(err)
	}
	if out, err := CheckPartition(img, Label); err != nil {
		t.Errorf("dirty flag only: %v\n%s", err, out)
	}
	// STATUS.txt's first cluster marked free in the FAT.
	v, err := readFAT(f, off)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := v.dirEntries(f, v.rootCluster)
	if err != nil {
		t.Fatal(err)
	}
	var status uint32
	for _, e := range entries {
		if string(e.name[:]) == "STATUS  TXT" {
			status = e.cluster
		}
	}
	if status < 2 {
		t.Fatalf("no STATUS.txt in the root directory: %+v", entries)
	}
	if _, err := f.WriteAt(make([]byte, 4), off+int64(v.reserved)*int64(v.bps)+int64(status)*4); err != nil {
		t.Fatal(err)
	}
	if out, err := CheckPartition(img, Label); err == nil {
		t.Errorf("a file on a free cluster passed the check:\n%s", out)
	}
}
