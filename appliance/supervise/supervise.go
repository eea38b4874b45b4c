// Package supervise keeps one child process running: it starts it, restarts
// it with backoff when it ends, and stops it (SIGTERM, then SIGKILL after a
// timeout) when told to. An exit with status 0 means the child was asked to
// stop (for the Connector: `commandline stop`) and ends supervision.
package supervise

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/eclipse-iofog/iofog-connector/appliance/reaper"
)

// Config describes the child and the restart policy.
type Config struct {
	Name   string   // for logs
	Path   string   // executable
	Args   []string // argv, including argv[0]
	Env    []string
	Stdout *os.File // nil: /dev/null
	Stderr *os.File // nil: /dev/null

	Backoff     Backoff
	StopTimeout time.Duration // how long SIGTERM may take before SIGKILL

	// OnEvent, if set, is called (from Run's goroutine) on every start and
	// exit; it must not block for long.
	OnEvent func(Event)
}

// EventKind says what happened to the child.
type EventKind int

const (
	Started EventKind = iota
	Exited
	StartFailed
)

// Event is one start or exit of the child.
type Event struct {
	Kind    EventKind
	Pid     int
	Exit    reaper.Exit   // Exited only
	Err     error         // StartFailed only
	Uptime  time.Duration // Exited only
	Restart time.Duration // delay before the next start; Exited and StartFailed only
	Time    time.Time
}

// ErrStopped is what Run returns when the child exited with status 0 by
// itself: somebody asked it to stop.
var ErrStopped = errors.New("child exited with status 0 (stop requested)")

// Supervisor runs one child. Use New.
type Supervisor struct {
	cfg Config
	r   *reaper.Reaper
	log *slog.Logger

	mu  sync.Mutex
	pid int
}

// New returns a supervisor for cfg whose children are reaped by r.
func New(r *reaper.Reaper, cfg Config, log *slog.Logger) *Supervisor {
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	return &Supervisor{cfg: cfg, r: r, log: log}
}

// Pid returns the running child's pid, or 0 when none runs.
func (s *Supervisor) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pid
}

// Signal sends sig to the running child.
func (s *Supervisor) Signal(sig syscall.Signal) error {
	pid := s.Pid()
	if pid == 0 {
		return fmt.Errorf("%s is not running", s.cfg.Name)
	}
	return syscall.Kill(pid, sig)
}

// Run keeps the child running until ctx is done (then it stops the child and
// returns ctx.Err()) or the child exits with status 0 (ErrStopped).
func (s *Supervisor) Run(ctx context.Context) error {
	bo := s.cfg.Backoff
	for {
		started := time.Now()
		pid, exited, err := s.start()
		if err != nil {
			delay := bo.Next(0)
			s.log.Error("cannot start child; will retry", "child", s.cfg.Name, "err", err, "retry_in", delay)
			s.emit(Event{Kind: StartFailed, Err: err, Restart: delay, Time: started})
			if !sleep(ctx, delay) {
				return ctx.Err()
			}
			continue
		}
		s.log.Info("started", "child", s.cfg.Name, "pid", pid)
		s.emit(Event{Kind: Started, Pid: pid, Time: started})

		var ex reaper.Exit
		select {
		case ex = <-exited:
		case <-ctx.Done():
			s.stop(pid, exited)
			return ctx.Err()
		}
		s.setPid(0)
		up := time.Since(started)
		if ex.Clean() {
			s.log.Info("child stopped by request", "child", s.cfg.Name, "pid", pid, "uptime", up.Round(time.Millisecond))
			s.emit(Event{Kind: Exited, Pid: pid, Exit: ex, Uptime: up, Time: time.Now()})
			return ErrStopped
		}
		delay := bo.Next(up)
		s.log.Warn("child ended; restarting", "child", s.cfg.Name, "pid", pid, "how", ex.String(),
			"uptime", up.Round(time.Millisecond), "restart_in", delay)
		s.emit(Event{Kind: Exited, Pid: pid, Exit: ex, Uptime: up, Restart: delay, Time: time.Now()})
		if !sleep(ctx, delay) {
			return ctx.Err()
		}
	}
}

func (s *Supervisor) start() (int, <-chan reaper.Exit, error) {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return 0, nil, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	defer null.Close()
	out, errf := orNull(s.cfg.Stdout, null), orNull(s.cfg.Stderr, null)
	attr := &syscall.ProcAttr{
		Env:   s.cfg.Env,
		Files: []uintptr{null.Fd(), out.Fd(), errf.Fd()},
		// Its own session: a ctrl-c on the console is PID 1's to handle.
		// Pdeathsig only matters when the supervisor is not PID 1 (tests).
		Sys: &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL},
	}
	pid, exited, err := s.r.Start(s.cfg.Path, s.cfg.Args, attr)
	if err != nil {
		return 0, nil, err
	}
	s.setPid(pid)
	return pid, exited, nil
}

// stop asks the child to end with SIGTERM and kills it after StopTimeout.
func (s *Supervisor) stop(pid int, exited <-chan reaper.Exit) {
	defer s.setPid(0)
	s.log.Info("stopping", "child", s.cfg.Name, "pid", pid)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	t := time.NewTimer(s.cfg.StopTimeout)
	defer t.Stop()
	select {
	case ex := <-exited:
		s.log.Info("stopped", "child", s.cfg.Name, "pid", pid, "how", ex.String())
		s.emit(Event{Kind: Exited, Pid: pid, Exit: ex, Time: time.Now()})
		return
	case <-t.C:
	}
	s.log.Warn("child did not stop in time; killing it", "child", s.cfg.Name, "pid", pid, "timeout", s.cfg.StopTimeout)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	// SIGKILL cannot be refused, but a child stuck in the kernel (D state)
	// can take its time; do not hang shutdown on it for ever.
	t.Reset(s.cfg.StopTimeout)
	select {
	case ex := <-exited:
		s.emit(Event{Kind: Exited, Pid: pid, Exit: ex, Time: time.Now()})
	case <-t.C:
		s.log.Error("child survived SIGKILL; giving up on it", "child", s.cfg.Name, "pid", pid)
	}
}

func (s *Supervisor) setPid(pid int) {
	s.mu.Lock()
	s.pid = pid
	s.mu.Unlock()
}

func (s *Supervisor) emit(e Event) {
	if s.cfg.OnEvent != nil {
		s.cfg.OnEvent(e)
	}
}

func orNull(f, null *os.File) *os.File {
	if f == nil {
		return null
	}
	return f
}

// sleep waits d or until ctx is done; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
