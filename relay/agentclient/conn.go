package agentclient

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
)

// ErrRejected means the Connector closed the connection instead of
// answering AUTHORIZED: wrong passcode, unknown port, or the mapping is full.
var ErrRejected = errors.New("connector rejected the passcode (closed without AUTHORIZED)")

// Conn is one authenticated connection to a mapping port. Reads return only
// payload: chunks that are exactly BEAT or BEATBEAT are heartbeat echoes and
// are swallowed. A timer writes BEAT every heartbeat frequency for the life
// of the connection, as the real agent does, and closes the connection after
// the absence threshold passes without hearing anything.
type Conn struct {
	raw net.Conn
	wmu sync.Mutex // keeps BEAT and payload writes whole

	freq, threshold time.Duration
	heard           atomic.Int64 // unix nanos of the last read of any bytes
	echoes          atomic.Int64

	closeOnce sync.Once
	timer     *time.Timer
	timerSet  chan struct{} // closed once timer is assigned, for tick to read it
	done      chan struct{}
	reason    atomic.Pointer[string]
}

// Dial opens and authenticates one connection as the config describes.
func Dial(ctx context.Context, cfg Config) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tc, err := cfg.TLSConfig()
	if err != nil {
		return nil, err
	}
	return dial(ctx, cfg, tc, &net.Dialer{})
}

func dial(ctx context.Context, cfg Config, tc *tls.Config, d *net.Dialer) (*Conn, error) {
	raw, err := d.DialContext(ctx, "tcp", cfg.addr())
	if err != nil {
		return nil, fmt.Errorf("dial connector %s: %w", cfg.addr(), err)
	}
	if tc != nil {
		raw = tls.Client(raw, tc)
	}
	// The handshake must finish within the absence threshold, or ctx.
	deadline := time.Now().Add(cfg.threshold())
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Now()) })
	defer stop()
	raw.SetDeadline(deadline)
	if _, err := io.WriteString(raw, cfg.Passcode); err != nil {
		raw.Close()
		return nil, fmt.Errorf("send passcode to %s: %w", cfg.addr(), err)
	}
	var reply [len(Authorized)]byte
	if _, err := io.ReadFull(raw, reply[:]); err != nil {
		raw.Close()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err) {
			return nil, fmt.Errorf("%s: %w", cfg.addr(), ErrRejected)
		}
		return nil, fmt.Errorf("wait for AUTHORIZED from %s: %w", cfg.addr(), err)
	}
	if string(reply[:]) != Authorized {
		raw.Close()
		return nil, fmt.Errorf("%s answered %q instead of AUTHORIZED", cfg.addr(), reply[:])
	}
	if !stop() {
		raw.Close()
		return nil, ctx.Err()
	}
	raw.SetDeadline(time.Time{})
	c := &Conn{raw: raw, freq: cfg.frequency(), threshold: cfg.threshold(), done: make(chan struct{}), timerSet: make(chan struct{})}
	c.heard.Store(time.Now().UnixNano())
	c.timer = time.AfterFunc(c.freq, c.tick)
	close(c.timerSet)
	return c, nil
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}

// tick sends a heartbeat and enforces the absence threshold. It runs on a
// timer rather than a goroutine so that idle pooled connections stay cheap.
func (c *Conn) tick() {
	<-c.timerSet
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
	c.wmu.Lock()
	c.raw.SetWriteDeadline(time.Now().Add(c.threshold))
	_, err := io.WriteString(c.raw, Beat)
	c.raw.SetWriteDeadline(time.Time{})
	c.wmu.Unlock()
	if err != nil {
		c.closeWith("heartbeat write failed: " + err.Error())
		return
	}
	next := c.freq
	if left := c.threshold - silent; left < next {
		next = left + time.Millisecond
	}
	c.timer.Reset(next)
}

// Read returns payload bytes from the Connector, skipping heartbeat echoes.
func (c *Conn) Read(p []byte) (int, error) {
	for {
		n, err := c.raw.Read(p)
		if n > 0 {
			c.heard.Store(time.Now().UnixNano())
			// Compared in place: converting p[:n] to a string first would
			// copy every read.
			if (n == 4 && string(p[:n]) == Beat) || (n == 8 && string(p[:n]) == Beat+Beat) {
				c.echoes.Add(int64(n / len(Beat)))
				if err == nil {
					continue
				}
				n = 0
			}
		}
		if err != nil && c.reason.Load() != nil {
			err = fmt.Errorf("%s: %w", *c.reason.Load(), err)
		}
		return n, err
	}
}

// Write sends payload; it never interleaves with a heartbeat.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.raw.Write(p)
}

// Close closes the connection and stops its heartbeat.
func (c *Conn) Close() error { return c.closeWith("") }

func (c *Conn) closeWith(reason string) error {
	var err error
	c.closeOnce.Do(func() {
		if reason != "" {
			c.reason.Store(&reason)
		}
		close(c.done)
		<-c.timerSet
		c.timer.Stop()
		err = c.raw.Close()
	})
	return err
}

// Done is closed when the connection is closed, by either side's Close or a
// heartbeat timeout.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Echoes is how many BEAT echoes the Connector has sent back.
func (c *Conn) Echoes() int64 { return c.echoes.Load() }

// CloseWrite half-closes the connection when the transport allows it.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.raw.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *Conn) LocalAddr() net.Addr                { return c.raw.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr               { return c.raw.RemoteAddr() }
func (c *Conn) SetDeadline(t time.Time) error      { return c.raw.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.raw.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.raw.SetWriteDeadline(t) }
