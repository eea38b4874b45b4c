//go:build !linux

package relay

import (
	"errors"
	"net"
	"syscall"
)

// canSplice: no splice(2) here; agent data goes through user space.
const canSplice = false

func queued(syscall.RawConn) (int, bool, error) { return 0, false, errors.New("queued: not supported") }

// spliceFrom falls back to a buffered copy where splice(2) does not exist.
func (a *agentConn) spliceFrom(src, _ *net.TCPConn, s *session, keep **[]byte) error {
	return a.copyBuffered(src, s, keep)
}

// setKeepAlive leaves listening sockets alone here; see keepalive_linux.go.
func setKeepAlive(_, _ string, _ syscall.RawConn) error { return nil }

// resetFollows cannot tell here; a closed fresh session is not moved.
func resetFollows(net.Conn) bool { return false }

// hasQueued cannot tell here.
func hasQueued(net.Conn) bool { return false }
