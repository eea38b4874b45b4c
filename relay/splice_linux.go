package relay

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// canSplice: splice(2) exists here.
const canSplice = true

// spliceFrom moves public client bytes into the agent connection with
// splice(2), never through user space. It first waits, without holding the
// agent's write lock, until the client has bytes queued and learns how many;
// then it splices exactly that many under the lock. So a BEAT echo can
// always tell whether a payload write is in progress (§6.6), and the lock is
// never held while the client is quiet. Nothing is consumed from the client
// before the session is settled, so a session that has to move to another
// agent connection leaves the client's next bytes queued for it. pk is
// src's peeker if the client already has one.
func (a *agentConn) spliceFrom(src, dst *net.TCPConn, s *session, keep **[]byte, pk *peeker) error {
	if pk == nil {
		var err error
		if pk, err = newPeeker(src); err != nil {
			return err
		}
	}
	for {
		avail, _, err := pk.queued()
		if s.state.Load() == sessRetry {
			return errMoved
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// A wake-up meant for an earlier pairing of this client that
			// arrived late: nothing else sets a read deadline here.
			src.SetReadDeadline(time.Time{})
			continue
		}
		if err != nil {
			return err
		}
		if !a.settled(s, keep) {
			return errMoved
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
				a.m.writeFailed(werr, "agent", dst)
				return werr
			}
			if rerr != nil {
				return rerr
			}
			continue
		}
		for avail > 0 {
			k := min(avail, spliceChunk)
			a.wmu.Lock()
			a.armWrite(time.Now())
			n, err := io.CopyN(dst, src, int64(k))
			a.lastPayload.Store(time.Now().UnixNano())
			a.wmu.Unlock()
			a.m.countToAgent(n)
			if err != nil {
				a.m.writeFailed(err, "agent", dst)
				return err
			}
			avail -= k
		}
	}
}

// peeker learns how many bytes a socket has queued without reading them.
// It is made once per connection: its callback and results live in it, so
// that a wait costs no allocation.
type peeker struct {
	rc    syscall.RawConn
	fn    func(fd uintptr) bool
	avail int
	beat  bool
	err   error
	peek  [len(beatMsg)]byte
}

func newPeeker(c *net.TCPConn) (*peeker, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	p := &peeker{rc: rc}
	p.fn = p.look
	return p, nil
}

// queued blocks until the socket has bytes to read and returns how many,
// and whether they start with a BEAT; io.EOF when the peer has closed its
// side.
func (p *peeker) queued() (int, bool, error) {
	p.avail, p.beat, p.err = 0, false, nil
	if err := p.rc.Read(p.fn); err != nil {
		return 0, false, err
	}
	return p.avail, p.beat, p.err
}

// look is one non-blocking attempt; false asks the poller to wait.
func (p *peeker) look(fd uintptr) bool {
	// Raw calls: the x/sys wrappers allocate a source address the peek
	// does not need.
	n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p.peek[0])), uintptr(len(p.peek)),
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	switch {
	case errno == unix.EAGAIN || errno == unix.EINTR:
		return false
	case errno != 0:
		p.err = errno
	case n == 0:
		p.err = io.EOF
	default:
		p.beat = int(n) == len(p.peek) && string(p.peek[:]) == beatMsg
		var avail int32
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, unix.SIOCINQ, uintptr(unsafe.Pointer(&avail))); errno != 0 {
			p.err = errno
		}
		p.avail = max(int(avail), 1)
	}
	return true
}

// resetFollows waits briefly after an agent's end of stream for the reset
// its kernel sends when bytes arrived that the agent never read: a couple of
// round-trip times, as the kernel measured them. Only a fresh session whose
// agent connection ends takes this wait.
func resetFollows(c net.Conn) bool {
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = nc.NetConn()
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	info := func() (*unix.TCPInfo, error) {
		var ti *unix.TCPInfo
		var ierr error
		if err := rc.Control(func(fd uintptr) { ti, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
			return nil, err
		}
		return ti, ierr
	}
	ti, err := info()
	if err != nil {
		return false
	}
	wait := 2*time.Duration(ti.Rtt)*time.Microsecond + 20*time.Millisecond
	end := time.Now().Add(min(wait, 2*time.Second))
	for {
		if ti.State == unix.BPF_TCP_CLOSE {
			return true
		}
		if time.Now().After(end) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
		if ti, err = info(); err != nil {
			return true
		}
	}
}

// hasQueued reports whether a connection has received bytes not read yet,
// without reading or blocking.
func hasQueued(c net.Conn) bool {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	return n > 0
}
