package update

import (
	"bytes"
	"crypto/ed25519"
	"io"
	"testing"
	"time"
)

// FuzzManifest: any bytes give a manifest that obeys the rules, or an error.
func FuzzManifest(f *testing.F) {
	f.Add([]byte(`{"format":"` + Format + `","version":"v1","board":"x86_64","files":[{"path":"a.efi","size":1,"sha256":"` + string(bytes.Repeat([]byte("ab"), 32)) + `"}]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"files":[{"path":"../../etc/passwd"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		if len(m.Files) == 0 || len(m.Files) > MaxFiles || m.Total() > MaxTotal {
			t.Fatalf("limits not kept: %d files, %d bytes", len(m.Files), m.Total())
		}
		for _, fs := range m.Files {
			if checkPath(fs.Path) != nil || fs.Size < 0 {
				t.Fatalf("bad file accepted: %+v", fs)
			}
		}
	})
}

// FuzzBundle: a mutated bundle signed with a fixed key is either read in
// full, every file matching its hash, or refused; never a panic.
func FuzzBundle(f *testing.F) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	var good bytes.Buffer
	if _, err := Write(&good, key, "v1", "rpi", time.Unix(0, 0), []SourceFile{{"vmlinuz", []byte("kernel")}, {"initrd.gz", []byte("initrd")}}); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	f.Add(good.Bytes()[:600])
	f.Add([]byte{})
	keys := []PublicKey{Public(key)}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewReader(bytes.NewReader(data), keys, "rpi")
		if err != nil {
			if !IsRefusal(err) {
				t.Fatalf("error that is not a refusal: %v", err)
			}
			return
		}
		var total int64
		for {
			_, fr, err := r.Next()
			if err != nil {
				if err != io.EOF && !IsRefusal(err) {
					t.Fatalf("error that is not a refusal: %v", err)
				}
				return
			}
			n, err := io.Copy(io.Discard, fr)
			total += n
			if total > MaxTotal {
				t.Fatal("read past the limit")
			}
			if err != nil {
				if !IsRefusal(err) {
					t.Fatalf("error that is not a refusal: %v", err)
				}
				return
			}
		}
	})
}
