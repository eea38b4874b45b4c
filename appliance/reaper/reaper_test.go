package reaper

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const childEnv = "REAPER_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		os.Exit(m.Run())
	case "exit7":
		os.Exit(7)
	case "grandchild":
		// Lives until its stdin closes, so the test decides when it ends.
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	case "orphan":
		// Starts a grandchild and leaves it behind: it becomes an orphan
		// that the subreaper (init, or the test) must reap.
		self, _ := os.Executable()
		cmd := exec.Command(self)
		cmd.Env = append(os.Environ(), childEnv+"=grandchild")
		cmd.Stdin = os.Stdin
		if err := cmd.Start(); err != nil {
			os.Exit(2)
		}
		os.Stdout.WriteString(strconv.Itoa(cmd.Process.Pid) + "\n")
		os.Exit(0)
	}
	os.Exit(99)
}

func start(t *testing.T, r *Reaper, mode string, files []uintptr) (int, <-chan Exit) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	pid, ch, err := r.Start(self, []string{self}, &syscall.ProcAttr{
		Env:   append(os.Environ(), childEnv+"="+mode),
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
	pid, ch := start(t, r, "exit7", []uintptr{0, 1, 2})
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
	_, ch := start(t, r, "orphan", []uintptr{stdinR.Fd(), outW.Fd(), 2})
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
