package update

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// writeSlotFile writes one file of a slot that does not run: the old one
// removed first (its clusters freed before new ones are taken, so a slot
// fits where its predecessor did), the new one written and synced.
func writeSlotFile(p string, r io.Reader, progress func(int64)) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, rerr := r.Read(buf)
		if k > 0 {
			if _, err := f.Write(buf[:k]); err != nil {
				f.Close()
				return fmt.Errorf("writing %s: %w", p, err)
			}
			n += int64(k)
			progress(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			f.Close()
			return rerr
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing %s: %w", p, err)
	}
	// Drop the cached pages, so the read-back reads the medium.
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	if err := f.Close(); err != nil {
		return err
	}
	return syncDir(filepath.Dir(p))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && err != unix.EINVAL {
		return err
	}
	return nil
}

// checkFile compares a written file with its manifest entry.
func checkFile(p string, want FileSum) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("reading %s back: %w", p, err)
	}
	if n != want.Size || hex.EncodeToString(h.Sum(nil)) != want.SHA256 {
		return fmt.Errorf("%s reads back as %d bytes with another sha256 than written (%d bytes): the medium may be failing", p, n, want.Size)
	}
	return nil
}

// rewriteInPlace writes data over a file of the same size without
// changing its length or clusters, so the FAT and directory stay as they
// were; a file of another size is replaced instead.
func rewriteInPlace(p string, data []byte) error {
	st, err := os.Stat(p)
	flags := os.O_WRONLY
	if err != nil || st.Size() != int64(len(data)) {
		flags |= os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(p, flags, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", p, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing %s: %w", p, err)
	}
	return f.Close()
}
