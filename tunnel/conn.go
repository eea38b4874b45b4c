package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse-iofog/iofog-connector/wire"
)

// ErrRejected means the Connector closed the connection instead of
// answering AUTHORIZED: wrong passcode, unknown port, or the mapping is full.
var ErrRejected = errors.New("connector closed the connection without AUTHORIZED (wrong passcode, removed mapping, or mapping full)")

// quietBeforeBeat is how long no payload must have been written before a
// heartbeat goes out. The Connector strips BEATs only at the start of a
// read, so a BEAT right behind payload could be merged into it and reach the
// other side as data; after a quiet second the payload has long been read.
const quietBeforeBeat = time.Second

// conn is one authenticated connection to a mapping port.
type conn struct {
	raw net.Conn     // *net.TCPConn or *tls.Conn
	tcp *net.TCPConn // raw when it is plain TCP: the kernel can splice it

	wmu       sync.Mutex // keeps BEAT and payload writes whole
	wclosed   bool       // under wmu: CloseWrite was called, no more BEATs
	lastWrite atomic.Int64
	heard     atomic.Int64  // unix nanos of the last bytes read
	echoes    *atomic.Int64 // heartbeat echoes heard, shared by a runner's connections
	toConn    atomic.Int64  // payload bytes written
	fromConn  atomic.Int64  // payload bytes read

	freq, threshold time.Duration
	timer           *time.Timer
	closeOnce       sync.Once
	done            chan struct{}
	reason          atomic.Pointer[string]
}

// dial opens and authenticates one connection.
func dial(ctx context.Context, cfg Config, tc *tls.Config, d *net.Dialer, echoes *atomic.Int64) (*conn, error) {
	raw, err := d.DialContext(ctx, "tcp", cfg.Addr())
	if err != nil {
		return nil, fmt.Errorf("dial connector %s: %w", cfg.Addr(), err)
	}
	c := &conn{raw: raw, freq: cfg.Frequency(), threshold: cfg.Threshold(), done: make(chan struct{}), echoes: echoes}
	if tc != nil {
		c.raw = tls.Client(raw, tc)
	} else {
		c.tcp, _ = raw.(*net.TCPConn)
	}
	deadline := time.Now().Add(cfg.Threshold())
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	stop := context.AfterFunc(ctx, func() { c.raw.SetDeadline(time.Now()) })
	defer stop()
	c.raw.SetDeadline(deadline)
	if _, err := io.WriteString(c.raw, cfg.Passcode); err != nil {
		c.raw.Close()
		return nil, fmt.Errorf("send passcode to %s: %w", cfg.Addr(), err)
	}
	var reply [len(wire.Authorized)]byte
	if _, err := io.ReadFull(c.raw, reply[:]); err != nil {
		c.raw.Close()
		var ne net.Error
		if ctx.Err() == nil && !(errors.As(err, &ne) && ne.Timeout()) &&
			(errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err)) {
			return nil, fmt.Errorf("%s: %w", cfg.Addr(), ErrRejected)
		}
		return nil, fmt.Errorf("wait for AUTHORIZED from %s: %w", cfg.Addr(), err)
	}
	if string(reply[:]) != wire.Authorized {
		c.raw.Close()
		return nil, fmt.Errorf("%s answered %q instead of AUTHORIZED; is this an ioFog Connector data port?", cfg.Addr(), reply[:])
	}
	if !stop() {
		c.raw.Close()
		return nil, ctx.Err()
	}
	c.raw.SetDeadline(time.Time{})
	now := time.Now().UnixNano()
	c.heard.Store(now)
	c.lastWrite.Store(now)
	c.wmu.Lock()
	c.timer = time.AfterFunc(c.freq, c.tick)
	c.wmu.Unlock()
	return c, nil
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe)
}

// tick sends a heartbeat and enforces the absence threshold. A timer, not a
// goroutine, so that an idle pool of many connections stays cheap.
func (c *conn) tick() {
	select {
	case <-c.done:
		return
	default:
	}
	silent := time.Since(time.Unix(0, c.heard.Load()))
	if silent > c.threshold {
		c.closeWith(fmt.Sprintf("heard nothing from the connector for %s", silent.Round(time.Millisecond)))
		return
	}
	next := c.freq
	c.wmu.Lock()
	quiet := time.Since(time.Unix(0, c.lastWrite.Load()))
	var err error
	switch {
	case c.wclosed:
	case quiet >= quietBeforeBeat:
		c.raw.SetWriteDeadline(time.Now().Add(c.threshold))
		_, err = io.WriteString(c.raw, wire.Beat)
		c.raw.SetWriteDeadline(time.Time{})
	default:
		// Payload is flowing and proves liveness; try again once quiet.
		next = quietBeforeBeat - quiet + time.Millisecond
	}
	c.wmu.Unlock()
	if err != nil {
		c.closeWith("heartbeat write failed: " + err.Error())
		return
	}
	if left := c.threshold - silent; left < next {
		next = left + time.Millisecond
	}
	c.timer.Reset(next)
}

// Read returns payload bytes, skipping heartbeat echoes (reads that are
// exactly BEAT or BEATBEAT).
func (c *conn) Read(p []byte) (int, error) {
	for {
		n, err := c.raw.Read(p)
		if n > 0 {
			c.heard.Store(time.Now().UnixNano())
			if wire.IsBeat(p[:n]) {
				c.echoes.Add(int64(n / len(wire.Beat)))
				if err == nil {
					continue
				}
				n = 0
			}
			c.fromConn.Add(int64(n))
		}
		if err != nil && c.reason.Load() != nil {
			err = fmt.Errorf("%s: %w", *c.reason.Load(), err)
		}
		return n, err
	}
}

// Write sends payload; it never interleaves with a heartbeat.
func (c *conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n, err := c.raw.Write(p)
	c.lastWrite.Store(time.Now().UnixNano())
	c.toConn.Add(int64(n))
	return n, err
}

// CloseWrite passes a half-close on to the Connector: the other end sees
// EOF and may still answer.
func (c *conn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wclosed = true
	if cw, ok := c.raw.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Close closes the connection and stops its heartbeat.
func (c *conn) Close() error { return c.closeWith("") }

func (c *conn) closeWith(reason string) error {
	var err error
	c.closeOnce.Do(func() {
		if reason != "" {
			c.reason.Store(&reason)
		}
		close(c.done)
		c.wmu.Lock()
		if c.timer != nil {
			c.timer.Stop()
		}
		c.wmu.Unlock()
		err = c.raw.Close()
	})
	return err
}

// copyToLocal moves payload from the Connector to the local side until EOF.
// Plain TCP on both sides goes through a pipe with splice(2): bulk payload
// never enters user space, and only reads of at most 8 bytes (which may be
// heartbeat echoes) are looked at.
func (c *conn) copyToLocal(local io.ReadWriteCloser) error {
	if lt, ok := local.(*net.TCPConn); ok && c.tcp != nil && canSplice {
		return c.spliceToLocal(lt)
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := local.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// copyFromLocal moves payload from the local side to the Connector until
// EOF, each chunk whole under the write lock so a heartbeat never lands
// inside it.
func (c *conn) copyFromLocal(local io.ReadWriteCloser) error {
	if lt, ok := local.(*net.TCPConn); ok && c.tcp != nil && canSplice {
		return c.spliceFromLocal(lt)
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := local.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// session carries one local connection over c, both ways, with half-close:
// an EOF from either end is passed on as CloseWrite to the other, and the
// session ends when both directions are done (so a reply written just
// before the local service closes still reaches the Connector). A broken
// direction ends both at once. first, when set, yields payload already
// read (or being read) from c before the rest.
func (c *conn) session(local io.ReadWriteCloser, first func() ([]byte, error)) {
	fin := make(chan struct{})
	defer close(fin)
	// However the connection to the Connector ends (heartbeat timeout
	// included), the local side goes with it.
	go func() {
		select {
		case <-c.done:
			local.Close()
		case <-fin:
		}
	}()
	up, down := make(chan error, 1), make(chan error, 1)
	go func() {
		err := c.copyFromLocal(local)
		if err == nil {
			err = c.CloseWrite()
		}
		up <- err
	}()
	go func() {
		var err error
		if first != nil {
			var b []byte
			if b, err = first(); len(b) > 0 {
				if _, werr := local.Write(b); werr != nil {
					down <- werr
					return
				}
			}
		}
		if err == nil {
			err = c.copyToLocal(local)
		} else if err == io.EOF {
			err = nil
		}
		if err == nil {
			if cw, ok := local.(interface{ CloseWrite() error }); ok {
				err = cw.CloseWrite()
			}
		}
		down <- err
	}()
	for range 2 {
		var err error
		select {
		case err = <-up:
		case err = <-down:
		}
		if err != nil {
			c.Close()
			local.Close()
		}
	}
}

// explain adds why the connection was closed (a heartbeat timeout, say) to
// an error from using it.
func (c *conn) explain(err error) error {
	if r := c.reason.Load(); r != nil && err != nil {
		return fmt.Errorf("%s: %w", *r, err)
	}
	return err
}
