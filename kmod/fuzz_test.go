package kmod

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func FuzzParseModinfo(f *testing.F) {
	f.Add([]byte("name=nf_tables\x00depends=nfnetlink,libcrc32c\x00softdep=pre: crc32c\x00alias=nfnetlink-subsys-10\x00"))
	f.Add([]byte("softdep=post: a pre: b c\x00\x00alias=\x00="))
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := ParseModinfo(data)
		if err != nil {
			return
		}
		for _, d := range append(info.Depends, info.Name) {
			if bytes.ContainsRune([]byte(d), '-') {
				t.Fatalf("name %q not normalized", d)
			}
		}
	})
}

// FuzzReadInfo feeds whole files to the ELF reader: a corrupt .ko in an
// image must give an error, never a crash.
func FuzzReadInfo(f *testing.F) {
	f.Add(elfModule("name=x", "depends=y", "alias=z*"))
	f.Add([]byte("\x7fELF"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "m.ko")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		_, _ = ReadInfo(p)
	})
}

func FuzzReadIndex(f *testing.F) {
	f.Add([]byte(`{"kernel":"6.1","modules":[{"name":"a","file":"k/a.ko","depends":["b"]},{"name":"b","file":"k/b.ko"}],"load":["a"]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ix, err := ReadIndex(bytes.NewReader(data))
		if err != nil {
			return
		}
		_, _ = ix.Closure(ix.Load...)
	})
}
