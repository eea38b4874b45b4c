//go:build !linux

package relay

import (
	"errors"
	"net"
	"syscall"
)

// canSplice: no splice(2) here; agent data goes through user space.
const canSplice = false

// peeker is not needed where nothing is spliced.
type peeker struct{}

func newPeeker(*net.TCPConn) (*peeker, error) { return nil, errors.New("peeking: not supported") }

func (*peeker) queued() (int, bool, error) { return 0, false, errors.New("peeking: not supported") }

// spliceFrom falls back to a buffered copy where splice(2) does not exist.
func (a *agentConn) spliceFrom(src, _ *net.TCPConn, s *session, keep **[]byte, _ *peeker) error {
	return a.copyBuffered(src, s, keep)
}

// setKeepAlive leaves listening sockets alone here; see keepalive_linux.go.
func setKeepAlive(_, _ string, _ syscall.RawConn) error { return nil }

// resetFollows cannot tell here; a closed fresh session is not moved.
func resetFollows(net.Conn) bool { return false }

// hasQueued cannot tell here.
func hasQueued(net.Conn) bool { return false }
