package reaper

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/eclipse-iofog/iofog-connector/internal/testchild"
)

func TestMain(m *testing.M) { testchild.Main(m) }

func start(t *testing.T, r *Reaper, role string, files []uintptr) (int, <-chan Exit) {
	t.Helper()
	self := testchild.Path(t)
	pid, ch, err := r.Start(self, []string{self}, &syscall.ProcAttr{
		Env:   testchild.Env(role),
		Files: files,
	})
	if err != nil {
		t.Fatal(err)
	}
	return pid, ch
}

func waitExit(t *testing.T, ch <-chan Exit) Exit {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(30 * time.Second):
		t.Fatal("no exit delivered within 30s")
		return Exit{}
	}
}

func TestExitGoesToWhoStartedIt(t *testing.T) {
	r := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	pid, ch := start(t, r, testchild.Exit(7), []uintptr{0, 1, 2})
	e := waitExit(t, ch)
	if e.Pid != pid || !e.Status.Exited() || e.Status.ExitStatus() != 7 {
		t.Fatalf("got %+v (%s), want pid %d exit status 7", e, e, pid)
	}
	if e.String() != "exited with status 7" {
		t.Fatalf("String() = %q", e.String())
	}
}

func TestOrphansAreReaped(t *testing.T) {
	// Become what init is for the whole system: the parent of orphans.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)

	r := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)

	stdinR, stdinW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	_, ch := start(t, r, testchild.Orphan, []uintptr{stdinR.Fd(), outW.Fd(), 2})
	stdinR.Close()
	outW.Close()
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the grandchild's pid: %v", err)
	}
	gpid, _ := strconv.Atoi(strings.TrimSpace(line))
	if e := waitExit(t, ch); !e.Clean() {
		t.Fatalf("orphaning child %s", e)
	}
	if err := syscall.Kill(gpid, 0); err != nil {
		t.Fatalf("grandchild %d should still run: %v", gpid, err)
	}

	stdinW.Close() // the grandchild ends now, parentless
	deadline := time.Now().Add(30 * time.Second)
	for r.Orphans() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("orphan not reaped within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Reaped means gone, not a zombie.
	if err := syscall.Kill(gpid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("kill(%d, 0) = %v after reaping, want ESRCH", gpid, err)
	}
}
