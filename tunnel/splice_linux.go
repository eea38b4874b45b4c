package tunnel

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/eclipse-iofog/iofog-connector/wire"
)

const canSplice = true

// pipeSize is asked of the kernel for the splice pipe; a larger pipe moves
// more per system call. The kernel may give less, which is fine.
const pipeSize = 1 << 20

// spliceToLocal moves Connector bytes to the local socket through a pipe.
// Each splice into the pipe is one read's worth; reads of at most 8 bytes
// are pulled into user space and dropped when they are heartbeat echoes, as
// Read does; everything else goes on to local without being copied.
func (c *conn) spliceToLocal(local *net.TCPConn) error {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return fmt.Errorf("splice pipe: %w", err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, pipeSize)
	src, err := c.tcp.SyscallConn()
	if err != nil {
		return err
	}
	dst, err := local.SyscallConn()
	if err != nil {
		return err
	}
	var small [8]byte
	for {
		var n int64
		var serr error
		if err := src.Read(func(fd uintptr) bool {
			n, serr = unix.Splice(int(fd), nil, p[1], nil, pipeSize, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			return !errors.Is(serr, unix.EAGAIN) && !errors.Is(serr, unix.EINTR)
		}); err != nil {
			return c.explain(err)
		}
		if serr != nil {
			return c.explain(&net.OpError{Op: "splice", Net: "tcp", Err: serr})
		}
		if n == 0 {
			return nil // EOF
		}
		c.heard.Store(time.Now().UnixNano())
		if n <= int64(len(small)) {
			m, err := unix.Read(p[0], small[:n])
			if err != nil {
				return fmt.Errorf("splice pipe: %w", err)
			}
			if wire.IsBeat(small[:m]) {
				c.echoes.Add(int64(m / len(wire.Beat)))
				continue
			}
			c.fromConn.Add(int64(m))
			if _, err := local.Write(small[:m]); err != nil {
				return err
			}
			continue
		}
		c.fromConn.Add(n)
		for left := int(n); left > 0; {
			var m int64
			if err := dst.Write(func(fd uintptr) bool {
				m, serr = unix.Splice(p[0], nil, int(fd), nil, left, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
				return !errors.Is(serr, unix.EAGAIN) && !errors.Is(serr, unix.EINTR)
			}); err != nil {
				return err
			}
			if serr != nil {
				return &net.OpError{Op: "splice", Net: "tcp", Err: serr}
			}
			left -= int(m)
		}
	}
}

// spliceFromLocal moves local bytes to the Connector. It waits, without the
// write lock, until local has bytes queued and learns how many, then
// splices exactly that many under the lock, so a heartbeat always falls
// between whole chunks and never waits on a quiet local side.
func (c *conn) spliceFromLocal(local *net.TCPConn) error {
	rc, err := local.SyscallConn()
	if err != nil {
		return err
	}
	for {
		avail, err := queued(rc)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		c.wmu.Lock()
		n, err := io.CopyN(c.tcp, local, int64(avail))
		c.lastWrite.Store(time.Now().UnixNano())
		c.wmu.Unlock()
		c.toConn.Add(n)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return c.explain(err)
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
