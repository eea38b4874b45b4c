package procstat_test

import (
	"os"
	"testing"

	"github.com/eclipse-iofog/iofog-connector/cmd/connbench/procstat"
)

// Memory touched by a process shows up in the RSS the benchmark reads.
func TestRSSGrowsWithTouchedMemory(t *testing.T) {
	before, err := procstat.RSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<20)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	after, err := procstat.RSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 32<<20 {
		t.Errorf("RSS grew by %d bytes after touching 64 MiB", after-before)
	}
	buf[0] = 2 // keep buf alive until after the second reading
}

// CPU time is read for a process the benchmark charges work to; spinning
// makes it grow.
func TestCPUGrowsWithWork(t *testing.T) {
	before, err := procstat.CPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for i := 0; i < 1<<34; i++ { // bounded; stops as soon as a tick is charged
		x ^= i
		if i%(1<<20) == 0 {
			now, err := procstat.CPU(os.Getpid())
			if err != nil {
				t.Fatal(err)
			}
			if now > before {
				return
			}
		}
	}
	t.Errorf("CPU time stayed at %v after a long busy loop (x=%d)", before, x)
}

func TestMissingProcess(t *testing.T) {
	if _, err := procstat.CPU(1 << 30); err == nil {
		t.Error("CPU of a pid that cannot exist: no error")
	}
}
