// Package reaper is the only caller of wait4 in the appliance's PID 1. It
// reaps every child the kernel hands to init, orphans included, and delivers
// each exit to whoever started that pid, so that supervising a child and
// reaping orphans never steal each other's exit statuses.
package reaper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Exit is how a child ended.
type Exit struct {
	Pid    int
	Status unix.WaitStatus
}

// Clean reports whether the child exited by itself with status 0.
func (e Exit) Clean() bool { return e.Status.Exited() && e.Status.ExitStatus() == 0 }

// String says how the child ended, in words for STATUS.txt and the console.
func (e Exit) String() string {
	switch {
	case e.Status.Exited():
		return fmt.Sprintf("exited with status %d", e.Status.ExitStatus())
	case e.Status.Signaled():
		s := fmt.Sprintf("killed by signal %d (%s)", int(e.Status.Signal()), e.Status.Signal())
		if e.Status.CoreDump() {
			s += ", core dumped"
		}
		return s
	default:
		return fmt.Sprintf("ended with wait status %#x", uint32(e.Status))
	}
}

// Reaper collects children's exits. Its zero value is not usable; use New.
type Reaper struct {
	log *slog.Logger

	// mu is held while a child is forked and registered, and while a reaped
	// pid is looked up, so an exit can never be reaped before its waiter is
	// registered.
	mu      sync.Mutex
	waiters map[int]chan Exit
	orphans int
}

// New returns a Reaper. Call Run to start reaping.
func New(log *slog.Logger) *Reaper {
	return &Reaper{log: log, waiters: make(map[int]chan Exit)}
}

// Run reaps children until ctx is done. It wakes on SIGCHLD and, in case a
// signal is ever lost, every few seconds.
func (r *Reaper) Run(ctx context.Context) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGCHLD)
	defer signal.Stop(sig)
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		r.ReapAll()
		select {
		case <-ctx.Done():
			return
		case <-sig:
		case <-tick.C:
		}
	}
}

// ReapAll reaps every child that has ended, without blocking.
func (r *Reaper) ReapAll() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			// ECHILD: no children at all; 0: none has ended yet.
			return
		}
		r.dispatch(Exit{Pid: pid, Status: ws})
	}
}

func (r *Reaper) dispatch(e Exit) {
	r.mu.Lock()
	ch, ok := r.waiters[e.Pid]
	delete(r.waiters, e.Pid)
	if !ok {
		r.orphans++
	}
	r.mu.Unlock()
	if ok {
		ch <- e // buffered: never blocks
		return
	}
	r.log.Debug("reaped orphan", "pid", e.Pid, "how", e.String())
}

// Orphans reports how many exits nobody was waiting for have been reaped.
func (r *Reaper) Orphans() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.orphans
}

// Start forks and execs argv[0]=argv[0] at path and returns its pid and a
// channel that receives its exit exactly once.
func (r *Reaper) Start(path string, argv []string, attr *syscall.ProcAttr) (int, <-chan Exit, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := syscall.ForkExec(path, argv, attr)
	if err != nil {
		return 0, nil, fmt.Errorf("start %s: %w", path, err)
	}
	ch := make(chan Exit, 1)
	r.waiters[pid] = ch
	return pid, ch, nil
}
