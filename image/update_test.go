package image

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/u-root/u-root/pkg/cpio"

	"github.com/eclipse-iofog/iofog-connector/update"
)

// The image carries the keys it accepts, its slot A holds exactly the
// system its update bundle carries, and the bundle verifies with those
// keys: a box built from the image takes the bundle of the next build.
func TestImageSlotsAndBundle(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	extra, _, _ := ed25519.GenerateKey(rand.Reader)
	for _, board := range []string{"x86_64", "rpi"} {
		t.Run(board, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, board+".img")
			bin := filepath.Join(dir, "init")
			os.WriteFile(bin, []byte("stand-in init"), 0o755)
			res, err := Build(context.Background(), Options{Board: board, Out: img, Binary: bin, CacheDir: requireCache(t),
				Validate: validate, Epoch: time.Unix(1700000000, 0), Version: "v7",
				SignKey: key, AcceptKeys: []update.PublicKey{update.Public(key), update.PublicKey(extra)}})
			if err != nil {
				t.Fatal(err)
			}
			if res.Bundle != filepath.Join(dir, board+".update.tar") {
				t.Fatalf("bundle at %q", res.Bundle)
			}
			keys := imageKeys(t, res.Initramfs.Data)
			if len(keys) != 2 || !bytes.Equal(keys[0], update.Public(key)) || !bytes.Equal(keys[1], extra) {
				t.Fatalf("image accepts %v", keys)
			}
			f, err := os.Open(res.Bundle)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			r, err := update.NewReader(f, keys, board)
			if err != nil {
				t.Fatal(err)
			}
			if r.Manifest.Version != "v7" {
				t.Errorf("bundle version %q", r.Manifest.Version)
			}
			n := 0
			for {
				fs, fr, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				data, err := io.ReadAll(fr)
				if err != nil {
					t.Fatal(err)
				}
				n++
				var onImage []string
				switch board {
				case "x86_64":
					onImage = []string{update.UKISlotPath(update.SlotA), UKIPath}
				case "rpi":
					onImage = []string{update.RaspiSlotDir(update.SlotA) + "/" + fs.Path}
				}
				for _, p := range onImage {
					label := Label
					if board == "x86_64" {
						label = ESPLabel
					}
					got, err := ReadFile(img, label, p)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, data) {
						t.Errorf("%s on the image differs from the bundle's %s", p, fs.Path)
					}
				}
			}
			if board == "rpi" {
				if n < 4 || !hasFile(r.Manifest, "bcm2711-rpi-4-b.dtb") {
					t.Errorf("Pi bundle has %d files: %+v", n, r.Manifest.Files)
				}
				for _, name := range []string{update.RaspiConfig, update.RaspiTryboot} {
					c, err := ReadBootFile(img, name)
					if err != nil {
						t.Fatal(err)
					}
					if s, err := update.RaspiSlotOf(c); err != nil || s != update.SlotA || len(c) != update.RaspiConfigSize {
						t.Errorf("%s: slot %q (%v), %d bytes", name, s, err, len(c))
					}
				}
			}
		})
	}
}

func hasFile(m *update.Manifest, p string) bool {
	for _, f := range m.Files {
		if f.Path == p {
			return true
		}
	}
	return false
}

func imageKeys(t *testing.T, initrd []byte) []update.PublicKey {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(initrd))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Name == strings.TrimPrefix(update.KeysFile, "/") {
			data, _ := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			keys, err := update.ParseKeyList(r.Name, data)
			if err != nil {
				t.Fatal(err)
			}
			return keys
		}
	}
	t.Fatalf("initramfs has no %s", update.KeysFile)
	return nil
}
