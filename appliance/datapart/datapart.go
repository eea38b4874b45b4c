// Package datapart finds, mounts and grows the appliance's data partition:
// the journaled ext4 file system (label IOFOG-DATA) that holds everything
// the appliance keeps (mapping store, last good config, TLS key and
// certificate, last known time, log). Unlike the FAT the user edits, it
// survives a power cut at any instant: ext4's journal replays on the next
// mount, and a file fsynced there is there after the cut.
package datapart

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/eclipse-iofog/iofog-connector/appliance/bootpart"
)

// DefaultLabel is the ext4 label the image build gives the data partition.
const DefaultLabel = "IOFOG-DATA"

// ErrNotExt4 is returned by ReadLabel for a device with no ext2/3/4 superblock.
var ErrNotExt4 = errors.New("not an ext2/3/4 file system")

// superblock offsets (the superblock starts 1024 bytes into the partition).
const (
	sbOffset      = 1024
	sbMagic       = 0x38
	sbLabel       = 0x78
	sbBlocksLo    = 0x04
	sbLogBlock    = 0x18
	sbFeatIncompt = 0x60
	sbBlocksHi    = 0x150
	incompat64bit = 0x80
)

// ReadLabel returns the label of the ext2/3/4 file system on r.
func ReadLabel(r io.ReaderAt) (string, error) {
	sb, err := readSuper(r)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(sb[sbLabel:sbLabel+16]), "\x00"), nil
}

func readSuper(r io.ReaderAt) ([]byte, error) {
	sb := make([]byte, 1024)
	if _, err := r.ReadAt(sb, sbOffset); err != nil {
		return nil, fmt.Errorf("read superblock: %w", err)
	}
	if binary.LittleEndian.Uint16(sb[sbMagic:]) != 0xef53 {
		return nil, ErrNotExt4
	}
	return sb, nil
}

// blocks returns the file system's size in blocks and its block size.
func blocks(sb []byte) (count uint64, blockSize uint64) {
	count = uint64(binary.LittleEndian.Uint32(sb[sbBlocksLo:]))
	if binary.LittleEndian.Uint32(sb[sbFeatIncompt:])&incompat64bit != 0 {
		count |= uint64(binary.LittleEndian.Uint32(sb[sbBlocksHi:])) << 32
	}
	return count, 1024 << binary.LittleEndian.Uint32(sb[sbLogBlock:])
}

// Finder returns a finder for the data partition by label.
func Finder(label string) bootpart.Finder {
	if label == "" {
		label = DefaultLabel
	}
	return bootpart.Finder{Spec: bootpart.Spec("LABEL=" + label), Kind: "ext4", ReadLabel: ReadLabel}
}

// Modules are the kernel modules Mount may need (Debian builds ext4 in;
// its metadata checksums want crc32c).
func Modules() []string { return []string{"crc16", "crc32c_generic", "mbcache", "jbd2", "ext4"} }

// Mount mounts the ext4 file system on dev at dir. The journal replays
// here, after a power cut. errors=remount-ro: a file system that went bad
// refuses writes (the Connector then refuses new mappings) rather than
// acknowledging what it may not keep.
func Mount(dev, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("mount data partition: %w", err)
	}
	const flags = unix.MS_NOATIME | unix.MS_NODEV | unix.MS_NOSUID | unix.MS_NOEXEC
	const opts = "errors=remount-ro"
	if err := unix.Mount(dev, dir, "ext4", flags, opts); err != nil {
		return fmt.Errorf("mount %s on %s (ext4, %s): %w", dev, dir, opts, err)
	}
	return nil
}

// Unmount flushes and unmounts dir, or remounts it read-only when busy.
func Unmount(dir string) error { return bootpart.Unmount(dir) }
