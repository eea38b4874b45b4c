package datapart

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"

	"github.com/eclipse-iofog/iofog-connector/image"
)

// disk writes a board's partition layout (FATs empty, ext4 made by mke2fs)
// into a file, then makes the file four times larger, as dd onto a bigger
// card would.
func disk(t *testing.T, board string) (string, int64) {
	t.Helper()
	b, err := image.LookupBoard(board)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), board+".img")
	if err := image.WriteDisk(p, b.DiskSize, b.Layout, nil, time.Unix(1700000000, 0)); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 4*b.DiskSize); err != nil {
		t.Fatal(err)
	}
	return p, 4 * b.DiskSize
}

func TestReadLabel(t *testing.T) {
	p, _ := disk(t, "rpi")
	off, size, err := image.PartitionExtent(p, image.DataLabel)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if l, err := ReadLabel(io.NewSectionReader(f, off, size)); err != nil || l != DefaultLabel {
		t.Errorf("label of the data partition: %q, %v; want %q", l, err, DefaultLabel)
	}
	// The FAT before it is no ext4.
	if _, err := ReadLabel(io.NewSectionReader(f, 1<<20, 1<<20)); err != ErrNotExt4 {
		t.Errorf("label of the FAT: %v; want ErrNotExt4", err)
	}
}

// The partition-table half of Grow, on files: the data partition must end
// at the disk's end (less the backup GPT), the other partitions unchanged,
// and a second run change nothing.
func TestGrowTable(t *testing.T) {
	for _, board := range []string{"x86_64", "rpi"} {
		t.Run(board, func(t *testing.T) {
			p, size := disk(t, board)
			b, _ := image.LookupBoard(board)
			pno := len(b.Layout.Partitions)
			start, _, err := image.PartitionExtent(p, image.DataLabel)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			end, err := growTable(f, pno, start/512, size, 512)
			if err != nil {
				t.Fatal(err)
			}
			want := size/512 - 1
			if b.Layout.Scheme == image.GPT {
				want = size/512 - 34
			}
			if end != want {
				t.Errorf("data partition ends at sector %d; want %d", end, want)
			}
			if again, err := growTable(f, pno, start/512, size, 512); err != nil || again != end {
				t.Errorf("second grow: end %d, %v; want %d unchanged", again, err, end)
			}
			d, err := diskfs.Open(p, diskfs.WithOpenMode(diskfs.ReadOnly))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			pt, err := d.GetPartitionTable()
			if err != nil {
				t.Fatal(err)
			}
			switch tb := pt.(type) {
			case *gpt.Table:
				if err := tb.Verify(f, uint64(size)); err != nil {
					t.Errorf("GPT after the grow: %v", err)
				}
				if tb.Partitions[pno-1].End != uint64(end) || tb.Partitions[0].Start != 2048 {
					t.Errorf("partitions after the grow: %+v", tb.Partitions)
				}
			case *mbr.Table:
				pp := tb.Partitions[pno-1]
				if int64(pp.Start)+int64(pp.Size)-1 != end || tb.Partitions[0].Start != 2048 {
					t.Errorf("partitions after the grow: %+v", tb.Partitions)
				}
			}
			// Not the last partition: refused.
			if _, err := growTable(f, 1, 2048, size, 512); err == nil {
				t.Error("growing partition 1 (not the last) was not refused")
			}
		})
	}
}
