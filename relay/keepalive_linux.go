package relay

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// setKeepAlive turns TCP keepalive on for a listening socket; the kernel
// copies the setting and its timers to every connection it accepts.
func setKeepAlive(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		for _, o := range []struct{ level, opt, val int }{
			{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(keepIdle.Seconds())},
			{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(keepInterval.Seconds())},
			{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, keepCount},
		} {
			if serr = unix.SetsockoptInt(int(fd), o.level, o.opt, o.val); serr != nil {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}
