package update

import (
	"archive/tar"
	"bytes"
	"io"
	"testing"
)

type tarWriter struct{ tw *tar.Writer }

func newTarWriter(w io.Writer) *tarWriter { return &tarWriter{tar.NewWriter(w)} }

func (w *tarWriter) put(t testing.TB, name string, data []byte) {
	t.Helper()
	if err := w.tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.tw.Write(data); err != nil {
		t.Fatal(err)
	}
}

func (w *tarWriter) close(t testing.TB) {
	if err := w.tw.Close(); err != nil {
		t.Fatal(err)
	}
}

func entry(t testing.TB, bundle []byte, name string) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(bundle))
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s not in the bundle: %v", name, err)
		}
		if h.Name == name {
			b, _ := io.ReadAll(tr)
			return b
		}
	}
}

func mustManifest(t testing.TB, bundle []byte) []byte { return entry(t, bundle, ManifestName) }
func extractSig(t testing.TB, bundle []byte) []byte   { return entry(t, bundle, SignatureName) }
