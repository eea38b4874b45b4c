package bootpart

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
)

// fatImage writes a whole-disk FAT32 file system labelled label, the way the
// image builder's library does.
func fatImage(t *testing.T, path, label string) {
	t.Helper()
	d, err := diskfs.Create(path, 40<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: filesystem.TypeFat32, VolumeLabel: label}); err != nil {
		t.Fatal(err)
	}
}

func TestReadLabelFromGoDiskfsFAT32(t *testing.T) {
	p := filepath.Join(t.TempDir(), "boot.img")
	fatImage(t, p, "IOFOG")
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := ReadLabel(f)
	if err != nil || got != "IOFOG" {
		t.Fatalf("ReadLabel = %q, %v; want IOFOG", got, err)
	}
}

func TestReadLabelFromMkfsVfat(t *testing.T) {
	mkfs, err := exec.LookPath("mkfs.vfat")
	if err != nil {
		t.Skip("mkfs.vfat not installed (dosfstools); the go-diskfs test covers FAT32")
	}
	for _, bits := range []string{"12", "16", "32"} {
		p := filepath.Join(t.TempDir(), "fat"+bits+".img")
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, 64<<20); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(mkfs, "-F", bits, "-n", "IOFOG"+bits, p).CombinedOutput(); err != nil {
			t.Fatalf("mkfs.vfat -F %s: %v\n%s", bits, err, out)
		}
		f, _ := os.Open(p)
		got, err := ReadLabel(f)
		f.Close()
		if err != nil || got != "IOFOG"+bits {
			t.Fatalf("FAT%s: ReadLabel = %q, %v; want IOFOG%s", bits, got, err, bits)
		}
	}
}

func TestReadLabelRejectsOtherData(t *testing.T) {
	zero := strings.NewReader(strings.Repeat("\x00", 512))
	if _, err := ReadLabel(zero); !errors.Is(err, ErrNotFAT) {
		t.Fatalf("zeroed sector: err = %v, want ErrNotFAT", err)
	}
	if _, err := ReadLabel(strings.NewReader("short")); err == nil {
		t.Fatal("a short device gave no error")
	}
}

// A fake /sys/class/block and /dev: the files stand in for block devices,
// which read the same way.
func TestFinderPicksTheLabelledPartition(t *testing.T) {
	root := t.TempDir()
	sys, dev := filepath.Join(root, "sys"), filepath.Join(root, "dev")
	for _, d := range []string{"vda", "vda1", "vda2", "loop0"} {
		if err := os.MkdirAll(filepath.Join(sys, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(sys, "vda1", "partition"), []byte("1\n"), 0o644)
	os.WriteFile(filepath.Join(sys, "vda2", "partition"), []byte("2\n"), 0o644)
	os.MkdirAll(dev, 0o755)
	fatImage(t, filepath.Join(dev, "vda1"), "OTHER")
	fatImage(t, filepath.Join(dev, "vda2"), "IOFOG")
	fatImage(t, filepath.Join(dev, "loop0"), "IOFOG") // never considered
	os.WriteFile(filepath.Join(dev, "vda"), make([]byte, 1024), 0o644)

	got, err := Finder{SysBlock: sys, Dev: dev}.Find()
	if err != nil || got != filepath.Join(dev, "vda2") {
		t.Fatalf("Find = %q, %v; want %s", got, err, filepath.Join(dev, "vda2"))
	}
	got, err = Finder{Spec: "LABEL=other", SysBlock: sys, Dev: dev}.Find()
	if err != nil || got != filepath.Join(dev, "vda1") {
		t.Fatalf("Find LABEL=other = %q, %v; want vda1", got, err)
	}
	_, err = Finder{Spec: "LABEL=MISSING", SysBlock: sys, Dev: dev}.Find()
	if err == nil || !strings.Contains(err.Error(), `vda1="OTHER"`) {
		t.Fatalf("missing label: err = %v, want one listing what was found", err)
	}
	got, err = Finder{Spec: Spec(filepath.Join(dev, "vda1"))}.Find()
	if err != nil || got != filepath.Join(dev, "vda1") {
		t.Fatalf("Find by path = %q, %v", got, err)
	}
}

func FuzzReadLabel(f *testing.F) {
	p := filepath.Join(f.TempDir(), "boot.img")
	d, err := diskfs.Create(p, 40<<20, diskfs.SectorSizeDefault)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: filesystem.TypeFat32, VolumeLabel: "IOFOG"}); err != nil {
		f.Fatal(err)
	}
	d.Close()
	b, _ := os.ReadFile(p)
	f.Add(b[:512])
	f.Add(make([]byte, 512))
	f.Fuzz(func(t *testing.T, sector []byte) {
		label, err := ReadLabel(strings.NewReader(string(sector)))
		if err == nil && len(label) > 11 {
			t.Fatalf("label %q longer than FAT allows", label)
		}
	})
}
