// Package procstat reads what the benchmark charges to a process: CPU time
// (its own and its reaped children's, since socat forks a child per
// connection) and resident memory.
package procstat

import (
	"fmt"
	"time"

	"github.com/prometheus/procfs"
)

// userHZ is the unit of the time fields in /proc/PID/stat; Linux fixes it at
// 100 for user space on every architecture we run on.
const userHZ = 100

// CPU returns user+system time of pid and of the children it has waited for.
func CPU(pid int) (time.Duration, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, fmt.Errorf("reading CPU time of pid %d: %w", pid, err)
	}
	s, err := p.Stat()
	if err != nil {
		return 0, fmt.Errorf("reading /proc/%d/stat: %w", pid, err)
	}
	ticks := int64(s.UTime) + int64(s.STime) + int64(s.CUTime) + int64(s.CSTime)
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// RSS returns the resident set size of pid in bytes (VmRSS).
func RSS(pid int) (int64, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, fmt.Errorf("reading memory of pid %d: %w", pid, err)
	}
	s, err := p.NewStatus()
	if err != nil {
		return 0, fmt.Errorf("reading /proc/%d/status: %w", pid, err)
	}
	return int64(s.VmRSS), nil
}
