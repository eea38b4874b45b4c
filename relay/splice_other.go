//go:build !linux

package relay

import "net"

// spliceFrom falls back to a buffered copy where splice(2) does not exist.
func (a *agentConn) spliceFrom(src, _ *net.TCPConn) error { return a.copyBuffered(src) }
