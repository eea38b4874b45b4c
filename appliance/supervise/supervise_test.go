package supervise

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/appliance/reaper"
	"github.com/eclipse-iofog/iofog-connector/internal/testchild"
)

// The test binary doubles as the supervised child (internal/testchild).
func TestMain(m *testing.M) { testchild.Main(m) }

// recorder collects supervisor events for assertions.
type recorder struct {
	mu     sync.Mutex
	events []Event
	ch     chan Event
}

func newRecorder() *recorder { return &recorder{ch: make(chan Event, 100)} }

func (r *recorder) on(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	r.ch <- e
}

// next waits for the next event; the timeout only guards against a hang.
func (r *recorder) next(t *testing.T) Event {
	t.Helper()
	select {
	case e := <-r.ch:
		return e
	case <-time.After(30 * time.Second):
		t.Fatal("no supervisor event within 30s")
		return Event{}
	}
}

func setup(t *testing.T, role string, rec *recorder, stdout ...*os.File) (*Supervisor, context.Context, context.CancelFunc) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := reaper.New(log)
	// The reaper outlives the supervisor, as in PID 1.
	rctx, rcancel := context.WithCancel(context.Background())
	t.Cleanup(rcancel)
	go r.Run(rctx)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	self := testchild.Path(t)
	s := New(r, Config{
		Name:        "child",
		Path:        self,
		Args:        []string{self},
		Env:         testchild.Env(role),
		Stderr:      os.Stderr,
		Stdout:      first(stdout),
		Backoff:     Backoff{Min: 10 * time.Millisecond, Max: 40 * time.Millisecond, ResetAfter: time.Hour},
		StopTimeout: 200 * time.Millisecond,
		OnEvent:     rec.on,
	}, log)
	return s, ctx, cancel
}

func TestCrashingChildIsRestartedWithBackoff(t *testing.T) {
	rec := newRecorder()
	s, ctx, cancel := setup(t, testchild.Exit(3), rec)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	var delays []time.Duration
	for len(delays) < 4 {
		e := rec.next(t)
		if e.Kind == StartFailed {
			t.Fatalf("start failed: %v", e.Err)
		}
		if e.Kind == Exited {
			if !e.Exit.Status.Exited() || e.Exit.Status.ExitStatus() != 3 {
				t.Fatalf("child ended %s, want exit status 3", e.Exit)
			}
			delays = append(delays, e.Restart)
		}
	}
	want := []time.Duration{10, 20, 40, 40}
	for i := range want {
		if delays[i] != want[i]*time.Millisecond {
			t.Fatalf("restart delays %v, want %v ms", delays, want)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v after cancel, want context.Canceled", err)
	}
}

func TestCleanExitEndsSupervision(t *testing.T) {
	rec := newRecorder()
	s, ctx, _ := setup(t, testchild.Exit(0), rec)
	if err := s.Run(ctx); !errors.Is(err, ErrStopped) {
		t.Fatalf("Run = %v, want ErrStopped", err)
	}
	starts := 0
	for _, e := range rec.events {
		if e.Kind == Started {
			starts++
		}
	}
	if starts != 1 {
		t.Fatalf("child started %d times, want once (a clean exit is not restarted)", starts)
	}
}

func TestKilledChildComesBackUnderANewPid(t *testing.T) {
	rec := newRecorder()
	s, ctx, cancel := setup(t, testchild.Serve, rec)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	first := rec.next(t)
	if first.Kind != Started {
		t.Fatalf("first event %+v, want Started", first)
	}
	if err := s.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ex := rec.next(t)
	if ex.Kind != Exited || !ex.Exit.Status.Signaled() || ex.Exit.Status.Signal() != syscall.SIGKILL {
		t.Fatalf("after SIGKILL got %+v (%s), want Exited by SIGKILL", ex, ex.Exit)
	}
	again := rec.next(t)
	if again.Kind != Started || again.Pid == first.Pid || s.Pid() != again.Pid {
		t.Fatalf("restart event %+v (Pid()=%d), want a new Started pid != %d", again, s.Pid(), first.Pid)
	}

	// Shutting down sends SIGTERM, which ends this child (by its handler,
	// or by the signal if it is not installed yet), well before SIGKILL.
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	last := rec.next(t)
	byTerm := last.Exit.Status.Signaled() && last.Exit.Status.Signal() == syscall.SIGTERM
	if last.Kind != Exited || !(last.Exit.Clean() || byTerm) {
		t.Fatalf("on stop got %+v (%s), want an exit caused by SIGTERM", last, last.Exit)
	}
	if s.Pid() != 0 {
		t.Fatalf("Pid() = %d after stop, want 0", s.Pid())
	}
}

func TestStubbornChildIsKilledAfterTimeout(t *testing.T) {
	rec := newRecorder()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	s, ctx, cancel := setup(t, testchild.Stubborn, rec, pw)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	if e := rec.next(t); e.Kind != Started {
		t.Fatalf("got %+v, want Started", e)
	}
	pw.Close()
	// Wait until the child ignores SIGTERM, so the SIGKILL path is what runs.
	if line, err := bufio.NewReader(pr).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("child said %q, %v; want ready", line, err)
	}
	cancel()
	<-done
	last := rec.next(t)
	if last.Kind != Exited || !last.Exit.Status.Signaled() || last.Exit.Status.Signal() != syscall.SIGKILL {
		t.Fatalf("got %+v (%s), want Exited by SIGKILL", last, last.Exit)
	}
}

func first(f []*os.File) *os.File {
	if len(f) == 0 {
		return nil
	}
	return f[0]
}
