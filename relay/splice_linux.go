package relay

import (
	"errors"
	"io"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// canSplice: splice(2) exists here.
const canSplice = true

// spliceFrom moves public client bytes into the agent connection with
// splice(2), never through user space. It first waits, without holding the
// agent's write lock, until the client has bytes queued and learns how many;
// then it splices exactly that many under the lock. So a BEAT echo can
// always tell whether a payload write is in progress (§6.6), and the lock is
// never held while the client is quiet.
func (a *agentConn) spliceFrom(src, dst *net.TCPConn, first int) error {
	rc, err := src.SyscallConn()
	if err != nil {
		return err
	}
	for {
		avail := first
		first = 0
		if avail == 0 {
			if avail, err = queued(rc); err != nil {
				return err
			}
		}
		if avail <= smallCopy {
			bp := a.m.c.smallBufs.Get().(*[]byte)
			n, rerr := src.Read((*bp)[:avail])
			var werr error
			if n > 0 {
				var w int
				w, werr = a.writePayload((*bp)[:n])
				a.m.countToAgent(int64(w))
			}
			a.m.c.smallBufs.Put(bp)
			if werr != nil {
				return werr
			}
			if rerr != nil {
				return rerr
			}
			continue
		}
		a.wmu.Lock()
		n, err := io.CopyN(dst, src, int64(avail))
		a.lastPayload.Store(time.Now().UnixNano())
		a.wmu.Unlock()
		a.m.countToAgent(n)
		if err != nil {
			return err
		}
	}
}

// queued blocks until the socket has bytes to read and returns how many;
// io.EOF when the peer has closed its side.
func queued(rc syscall.RawConn) (int, error) {
	var (
		avail int
		opErr error
		peek  [1]byte
	)
	err := rc.Read(func(fd uintptr) bool {
		n, _, err := unix.Recvfrom(int(fd), peek[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
			return false
		case err != nil:
			opErr = err
		case n == 0:
			opErr = io.EOF
		default:
			avail, opErr = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
			if opErr == nil && avail < 1 {
				avail = 1
			}
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	return avail, opErr
}
