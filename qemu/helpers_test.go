package qemu

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/eclipse-iofog/iofog-connector/image"
	"github.com/eclipse-iofog/iofog-connector/internal/testenv"
)

// requireQEMU returns the kernel cache, or ends the test when QEMU or the
// cache is missing (testenv's rule).
func requireQEMU(t testing.TB, board string) string {
	t.Helper()
	return testenv.RequireQEMU(t, func() (string, error) { return Ready(board) })
}

// goBuild builds a static linux binary of pkg (a path inside the module)
// for goarch into dir.
func goBuild(t testing.TB, pkg, goarch, dir string) string {
	t.Helper()
	root, err := image.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, filepath.Base(pkg)+"-"+goarch)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -buildid=", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go build %s for %s: %v\n%s", pkg, goarch, err, stderr.String())
	}
	return out
}

// buildImage builds board's image into dir with opts filled in.
func buildImage(t testing.TB, o image.Options) *image.Result {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res, err := image.Build(ctx, o)
	if err != nil {
		t.Fatalf("building the %s image: %v", o.Board, err)
	}
	return res
}

// testLog writes the serial console to the test log line by line when -v
// is on (the whole console is in failure messages anyway).
type testLog struct {
	t    testing.TB
	mu   *sync.Mutex
	line *[]byte
}

func newTestLog(t testing.TB) testLog { return testLog{t: t, mu: new(sync.Mutex), line: new([]byte)} }

func (l testLog) Write(p []byte) (int, error) {
	if !testing.Verbose() {
		return len(p), nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	*l.line = append(*l.line, p...)
	for {
		i := bytes.IndexByte(*l.line, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.t.Logf("console: %s", bytes.TrimRight((*l.line)[:i], "\r"))
		*l.line = (*l.line)[i+1:]
	}
}
