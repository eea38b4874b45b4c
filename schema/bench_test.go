package schema

import (
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkLoad: loading each example, schema compilation included (the
// appliance loads its config once per boot).
func BenchmarkLoad(b *testing.B) {
	for _, name := range examples {
		data, err := os.ReadFile(filepath.Join("..", "examples", name))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(Format(name), func(b *testing.B) {
			for b.Loop() {
				if _, err := LoadBytes(name, data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
