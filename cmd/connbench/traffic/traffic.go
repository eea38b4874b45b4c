// Package traffic is both ends of the benchmark's connections: the far end
// (the "microservice", reached directly, through a relay, or as an agent
// connection pooled at the Connector) and the clients that push, pull and
// echo through it. The first byte a client sends tells the far end what to
// do, so one far end serves every measurement.
package traffic

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// The first byte of every session.
const (
	modeSink  byte = 'S' // far end reads to EOF and reports the transfer
	modeWrite byte = 'W' // far end writes for the duration that follows, then closes
	modeEcho  byte = 'E' // far end echoes one byte, then waits for EOF
)

// bufSize is the read and write size on both ends: large enough that the
// ends cost little next to the relay in between.
const bufSize = 128 << 10

// guard bounds every wait on the network, so a relay that loses a close
// makes a measurement fail instead of hanging the run.
const guard = 30 * time.Second

// Transfer is what one end saw of a one-way stream.
type Transfer struct {
	Bytes       int64     // bytes that arrived
	Sent        int64     // bytes the client wrote (Push only)
	First, Last time.Time // arrival of the first and the last bytes
}

// Rate returns bytes per second between the first and the last byte.
func (t Transfer) Rate() float64 {
	d := t.Last.Sub(t.First).Seconds()
	if t.Bytes == 0 || d <= 0 {
		return 0
	}
	return float64(t.Bytes) / d
}

// Far is the far end. Serve one connection with Serve; streams pushed to it
// are reported on Sinks.
type Far struct {
	sinks chan Transfer
}

// NewFar returns a far end ready to serve.
func NewFar() *Far { return &Far{sinks: make(chan Transfer, 1)} }

// Listen serves every connection accepted on ln until ctx ends.
func (f *Far) Listen(ctx context.Context, ln net.Listener) {
	context.AfterFunc(ctx, func() { ln.Close() })
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			f.Serve(c)
		}()
	}
}

// Serve runs one session on c and returns when it is over (c is not closed).
func (f *Far) Serve(c net.Conn) error {
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return err
	}
	c.SetDeadline(time.Now().Add(guard))
	switch mode[0] {
	case modeSink:
		t, err := sink(c, Transfer{})
		select {
		case f.sinks <- t:
		default: // nobody waiting: a stale session, drop it
		}
		return err
	case modeWrite:
		var d [8]byte
		if _, err := io.ReadFull(c, d[:]); err != nil {
			return err
		}
		_, err := source(c, time.Duration(binary.BigEndian.Uint64(d[:])))
		return err
	case modeEcho:
		if _, err := c.Write(mode[:]); err != nil {
			return err
		}
		_, err := io.Copy(io.Discard, c)
		return err
	}
	return fmt.Errorf("unknown session mode %q", mode[0])
}

func sink(c net.Conn, t Transfer) (Transfer, error) {
	buf := make([]byte, bufSize)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			now := time.Now()
			if t.Bytes == 0 {
				t.First = now
			}
			t.Last = now
			t.Bytes += int64(n)
		}
		if errors.Is(err, io.EOF) {
			return t, nil
		}
		if err != nil {
			return t, err
		}
	}
}

// source writes for d and returns how many bytes it wrote.
func source(c net.Conn, d time.Duration) (int64, error) {
	buf := make([]byte, bufSize)
	for i := range buf {
		buf[i] = byte(i) // not BEAT, not all zeros
	}
	var sent int64
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		n, err := c.Write(buf)
		sent += int64(n)
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// Dial opens one client connection to whatever is being measured.
type Dial func(ctx context.Context) (net.Conn, error)

// TCP returns a Dial to addr.
func TCP(addr string) Dial {
	var d net.Dialer
	return func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
}

// Push streams to the far end for d and returns what the far end received.
func (f *Far) Push(ctx context.Context, dial Dial, d time.Duration) (Transfer, error) {
	for len(f.sinks) > 0 {
		<-f.sinks
	}
	c, err := dial(ctx)
	if err != nil {
		return Transfer{}, fmt.Errorf("push: dial: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(d + guard))
	if _, err := c.Write([]byte{modeSink}); err != nil {
		return Transfer{}, fmt.Errorf("push: %w", err)
	}
	sent, err := source(c, d)
	if err != nil {
		return Transfer{}, fmt.Errorf("push: %w", err)
	}
	c.Close()
	select {
	case t := <-f.sinks:
		t.Sent = sent
		return t, nil
	case <-time.After(guard):
		return Transfer{}, errors.New("push: the far end never saw the end of the stream (a relay lost the close)")
	case <-ctx.Done():
		return Transfer{}, ctx.Err()
	}
}

// Pull asks the far end to stream for d and returns what the client received.
func Pull(ctx context.Context, dial Dial, d time.Duration) (Transfer, error) {
	c, err := dial(ctx)
	if err != nil {
		return Transfer{}, fmt.Errorf("pull: dial: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(d + guard))
	var req [9]byte
	req[0] = modeWrite
	binary.BigEndian.PutUint64(req[1:], uint64(d))
	if _, err := c.Write(req[:]); err != nil {
		return Transfer{}, fmt.Errorf("pull: %w", err)
	}
	t, err := sink(c, Transfer{})
	if err != nil {
		return t, fmt.Errorf("pull: %w", err)
	}
	return t, nil
}

// Sessions is the outcome of a session-setup run.
type Sessions struct {
	OK, Failed int
	Elapsed    time.Duration
	LastErr    error
}

// PerSecond returns completed sessions per second.
func (s Sessions) PerSecond() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.OK) / s.Elapsed.Seconds()
}

// Setup runs sessions (connect, one-byte echo, close) from conc workers for d.
func Setup(ctx context.Context, dial Dial, conc int, d time.Duration) Sessions {
	var (
		mu  sync.Mutex
		out Sessions
		wg  sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(d)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) && ctx.Err() == nil {
				err := echoOnce(ctx, dial)
				mu.Lock()
				if err != nil {
					out.Failed++
					out.LastErr = err
				} else {
					out.OK++
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(10 * time.Millisecond) // do not spin on a refusing peer
				}
			}
		}()
	}
	wg.Wait()
	out.Elapsed = time.Since(start)
	return out
}

func echoOnce(ctx context.Context, dial Dial) error {
	c, err := dial(ctx)
	if err != nil {
		return fmt.Errorf("session: dial: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(guard))
	b := [1]byte{modeEcho}
	if _, err := c.Write(b[:]); err != nil {
		return fmt.Errorf("session: %w", err)
	}
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return fmt.Errorf("session: reading the echo: %w", err)
	}
	if b[0] != modeEcho {
		return fmt.Errorf("session: echo returned %q, want %q", b[0], modeEcho)
	}
	return nil
}

// Session times one session set up as Setup's are: connect, a one-byte
// echo, close.
func Session(ctx context.Context, dial Dial) (time.Duration, error) {
	start := time.Now()
	err := echoOnce(ctx, dial)
	return time.Since(start), err
}
