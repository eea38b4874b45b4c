// Package atomicfile writes files so that a power loss at any moment leaves
// either the old content or the new, never a mix: temp file in the same
// directory, fsync, rename, fsync the directory. It optionally keeps the
// previous generation beside the file (NAME.prev) for readers to fall back on.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Options tune Write.
type Options struct {
	// KeepPrevious keeps the replaced content as PATH.prev.
	KeepPrevious bool
}

// PrevSuffix names the kept previous generation.
const PrevSuffix = ".prev"

// Write replaces path with data atomically.
func Write(path string, data []byte, perm fs.FileMode, opt Options) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: create temp file: %w", path, err)
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(perm); err != nil && !errors.Is(err, fs.ErrPermission) {
		// FAT has no permission bits; a failed chmod there is not an error.
		_ = err
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: close: %w", path, err)
	}
	if opt.KeepPrevious {
		// Copy rather than rename the old file away, so that path itself
		// always exists, whichever instant the power goes.
		if old, err := os.ReadFile(path); err == nil {
			if err := Write(path+PrevSuffix, old, perm, Options{}); err != nil {
				return fmt.Errorf("write %s: keep previous generation: %w", path, err)
			}
		}
	}
	if err := os.Rename(tmpName, path); err != nil {
		return fmt.Errorf("write %s: rename into place: %w", path, err)
	}
	ok = true
	return SyncDir(dir)
}

// SyncDir fsyncs a directory so a rename in it is durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// Read returns the content of path, or of its previous generation when path
// is missing or unreadable. fromPrev tells which one was read.
func Read(path string) (data []byte, fromPrev bool, err error) {
	data, err = os.ReadFile(path)
	if err == nil {
		return data, false, nil
	}
	prev, perr := os.ReadFile(path + PrevSuffix)
	if perr == nil {
		return prev, true, nil
	}
	return nil, false, err
}
