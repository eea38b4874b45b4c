package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"time"
)

// RewriteConfig replaces the config on the config partition of the image
// at img with the file cfg, without rebuilding the image. The config is
// validated first (when validate is not nil); the other config names are
// removed so the new file is the one the appliance uses. The file system
// is left as fsck.fat wants it (the old file's clusters freed, the free
// count right). Then img.xz (when there is one) and img.sha256 are made
// again from the new image, so every file the README flashes carries the
// new config; it returns the files it rewrote.
func RewriteConfig(ctx context.Context, img, cfg string, validate func(name string, data []byte) error) ([]string, error) {
	if err := rewriteConfig(img, cfg, validate); err != nil {
		return nil, err
	}
	if err := refixFAT(img, Label); err != nil {
		return nil, err
	}
	done := []string{img}
	xz := ""
	if _, err := os.Stat(img + ".xz"); err == nil {
		if xz, err = compress(ctx, img); err != nil {
			return done, err
		}
		done = append(done, xz)
	}
	sums, err := writeSums(img, xz)
	if err != nil {
		return done, err
	}
	return append(done, sums), nil
}

func rewriteConfig(img, cfg string, validate func(name string, data []byte) error) error {
	name, err := ConfigName(cfg)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(cfg)
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	if validate != nil {
		if err := validate(name, data); err != nil {
			return fmt.Errorf("config %s is not valid, image %s left as it was: %w", cfg, img, err)
		}
	}
	fs, closeDisk, err := OpenBootFS(img, true)
	if err != nil {
		return err
	}
	entries, err := fs.ReadDir(".")
	if err != nil {
		closeDisk()
		return fmt.Errorf("image %s: listing the boot partition: %w", img, err)
	}
	for _, e := range entries {
		for _, n := range ConfigNames() {
			if strings.EqualFold(e.Name(), n) {
				if err := fs.Remove("/" + e.Name()); err != nil {
					closeDisk()
					return fmt.Errorf("image %s: removing the old %s: %w", img, e.Name(), err)
				}
			}
		}
	}
	if err := writeFile(fs, "/"+name, data); err != nil {
		closeDisk()
		return fmt.Errorf("image %s: %w", img, err)
	}
	now := time.Now()
	if err := fs.Chtimes("/"+name, now, now, now); err != nil {
		closeDisk()
		return err
	}
	return errors.Join(closeDisk())
}

// WriteBootFiles adds files to the config partition (IOFOG) of the image at
// img, creating their directories, and leaves the FAT as fsck.fat wants it.
// Tests use it to make a card of the first layout, which kept state/ there.
func WriteBootFiles(img string, files []File) error {
	fs, closeDisk, err := OpenBootFS(img, true)
	if err != nil {
		return err
	}
	for _, f := range files {
		if dir := path.Dir(f.Path); dir != "." {
			if err := fs.Mkdir("/" + dir); err != nil {
				closeDisk()
				return fmt.Errorf("image %s: mkdir %s: %w", img, dir, err)
			}
		}
		if err := writeFile(fs, "/"+f.Path, f.Data); err != nil {
			closeDisk()
			return fmt.Errorf("image %s: %w", img, err)
		}
	}
	if err := closeDisk(); err != nil {
		return err
	}
	return refixFAT(img, Label)
}
