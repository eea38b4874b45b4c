package logfile

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRotatesAtCapKeepingOneGeneration(t *testing.T) {
	p := filepath.Join(t.TempDir(), "connector.log")
	w, err := Open(p, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var all []string
	for i := range 30 {
		line := fmt.Sprintf("line %02d of the log\n", i) // 19 bytes
		all = append(all, line)
		if _, err := w.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	cur, _ := os.ReadFile(p)
	old, _ := os.ReadFile(p + ".1")
	if len(cur) > 100 || len(old) > 100 {
		t.Fatalf("a generation exceeds the cap: %d and %d bytes", len(cur), len(old))
	}
	if _, err := os.Stat(p + ".2"); err == nil {
		t.Fatal("more than one old generation kept")
	}
	// The two generations are the newest lines, in order, lines never split.
	got := string(old) + string(cur)
	if !strings.HasSuffix(strings.Join(all, ""), got) || !strings.HasPrefix(got, "line ") {
		t.Fatalf("old+current is not the tail of what was written:\n%s", got)
	}
	if !strings.HasSuffix(string(cur), "line 29 of the log\n") {
		t.Fatalf("current file does not end with the newest line:\n%s", cur)
	}
}

func TestReopenAppendsAndCountsExistingSize(t *testing.T) {
	p := filepath.Join(t.TempDir(), "connector.log")
	os.WriteFile(p, []byte(strings.Repeat("x", 90)), 0o644)
	w, err := Open(p, 100)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("0123456789abcdef\n"))
	w.Close()
	if b, _ := os.ReadFile(p + ".1"); len(b) != 90 {
		t.Fatalf("old content (%d bytes) should have rotated to .1 before passing the cap", len(b))
	}
	if b, _ := os.ReadFile(p); string(b) != "0123456789abcdef\n" {
		t.Fatalf("current = %q", b)
	}
}
