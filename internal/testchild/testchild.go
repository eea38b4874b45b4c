// Package testchild lets a test binary start itself as a child process that
// plays a role (exit with a status, serve until SIGTERM, ignore SIGTERM,
// leave an orphan), for tests of code that starts, supervises and reaps
// processes. Call Main from TestMain; start Path() with Env(role).
package testchild

import (
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// envVar names the role a child plays; unset, the binary runs its tests.
const envVar = "IOFOG_TEST_CHILD"

// The roles.
const (
	// Serve runs until SIGTERM, then exits 0, as the Connector does.
	Serve = "serve"
	// Stubborn ignores SIGTERM, writes "ready\n" to stdout, and sleeps.
	Stubborn = "stubborn"
	// Orphan starts a grandchild that lives until its stdin (inherited)
	// closes, writes the grandchild's pid and a newline to stdout, and
	// exits 0, leaving the grandchild to whoever reaps orphans.
	Orphan = "orphan"
	// untilStdinCloses is the orphan's grandchild.
	untilStdinCloses = "until-stdin-closes"
)

// Exit is the role that exits at once with status n.
func Exit(n int) string { return "exit " + strconv.Itoa(n) }

// Main plays the role named in the environment and exits, or, when there is
// none, runs the tests and exits with their result.
func Main(m *testing.M) {
	role, ok := os.LookupEnv(envVar)
	if !ok {
		os.Exit(m.Run())
	}
	os.Exit(play(role))
}

// Path is the test binary, to start as a child.
func Path(t testing.TB) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatalf("test binary's path: %v", err)
	}
	return self
}

// Env is this process's environment plus what makes a child play role.
func Env(role string) []string { return append(os.Environ(), envVar+"="+role) }

func play(role string) int {
	if s, ok := strings.CutPrefix(role, "exit "); ok {
		n, err := strconv.Atoi(s)
		if err != nil {
			return 99
		}
		return n
	}
	switch role {
	case Serve:
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		<-sig
		return 0
	case Stubborn:
		signal.Ignore(syscall.SIGTERM)
		os.Stdout.WriteString("ready\n")
		time.Sleep(time.Hour)
		return 0
	case untilStdinCloses:
		io.Copy(io.Discard, os.Stdin)
		return 0
	case Orphan:
		self, err := os.Executable()
		if err != nil {
			return 2
		}
		cmd := exec.Command(self)
		cmd.Env = Env(untilStdinCloses)
		cmd.Stdin = os.Stdin
		if err := cmd.Start(); err != nil {
			return 2
		}
		os.Stdout.WriteString(strconv.Itoa(cmd.Process.Pid) + "\n")
		return 0
	}
	return 99 // a role this harness does not know
}
