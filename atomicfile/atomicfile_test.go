package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesAndKeepsPrevious(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "configs.json")
	if err := Write(p, []byte("one"), 0o644, Options{KeepPrevious: true}); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("two"), 0o644, Options{KeepPrevious: true}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "two" {
		t.Fatalf("current = %q, want two", b)
	}
	if b, _ := os.ReadFile(p + PrevSuffix); string(b) != "one" {
		t.Fatalf("previous = %q, want one", b)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Fatalf("temp files left behind: %v", ents)
	}
}

func TestReadFallsBackToPrevious(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state")
	if err := os.WriteFile(p+PrevSuffix, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, prev, err := Read(p)
	if err != nil || !prev || string(b) != "old" {
		t.Fatalf("Read = %q, %v, %v; want old from previous generation", b, prev, err)
	}
	if _, _, err := Read(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("Read of a missing file with no previous generation succeeded")
	}
}

func TestWriteIntoMissingDirectoryFails(t *testing.T) {
	err := Write(filepath.Join(t.TempDir(), "no", "such"), []byte("x"), 0o644, Options{})
	if err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
}
