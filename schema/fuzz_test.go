package schema

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// fuzzLoad checks what every load must guarantee, whatever the bytes: no
// panic; a valid config compiles to settings the original reads; an invalid
// one is a list of errors that each name the file, a line and a column.
func fuzzLoad(f *testing.F, ext string) {
	for _, tc := range loadCases {
		if Format(tc.file) == Format("x"+ext) {
			f.Add([]byte(tc.src))
		}
	}
	if b, err := os.ReadFile(filepath.Join("..", "examples", map[string]string{".conf": "iofog-connector.conf", ".cue": "connector.cue", ".hcl": "connector.hcl"}[ext])); err == nil {
		f.Add(b)
	}
	name := "fuzz" + ext
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := LoadBytes(name, data)
		if err == nil {
			if cfg == nil {
				t.Fatal("no config and no error")
			}
			out, err := CompileSettings(cfg, false)
			if err != nil {
				t.Fatalf("valid config does not compile: %v", err)
			}
			if _, err := strictDecode(out); err != nil {
				t.Fatalf("compiled settings %s break the original's rules: %v", out, err)
			}
			return
		}
		var es Errors
		if !errors.As(err, &es) || len(es) == 0 {
			t.Fatalf("rejection without positions: %T %v", err, err)
		}
		for _, e := range es {
			if e.File != name || e.Line < 1 || e.Column < 1 || e.Msg == "" {
				t.Fatalf("error without a position or reason: %q", e.Error())
			}
		}
	})
}

func FuzzLoadJSON(f *testing.F) { fuzzLoad(f, ".conf") }
func FuzzLoadCUE(f *testing.F)  { fuzzLoad(f, ".cue") }
func FuzzLoadHCL(f *testing.F)  { fuzzLoad(f, ".hcl") }

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"6000", "6000-6050", "1-65535", "0", "65536", "6050-6000", "-", "a-b", "06000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		lo, hi, err := ParseRange(s)
		if err != nil {
			return
		}
		if lo < 1 || lo > hi {
			t.Fatalf("ParseRange(%q) = %d, %d", s, lo, hi)
		}
	})
}
