// Package agent speaks the agent side of the Connector's data plane
// (docs/protocol.md §4.2) as thinly as possible: dial port1, send the 36-byte
// passcode, read AUTHORIZED. The benchmark uses it instead of a full agent
// client so that only the Connector sits between client and far end, the
// same single hop as every relay it is compared with.
package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const authorized = "AUTHORIZED"

// authTimeout bounds the handshake; the Connector answers at once or closes.
const authTimeout = 10 * time.Second

// Auth opens one authenticated agent connection to addr. d may set a source
// address.
func Auth(ctx context.Context, d *net.Dialer, addr, passcode string) (net.Conn, error) {
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("agent: dial %s: %w", addr, err)
	}
	c.SetDeadline(time.Now().Add(authTimeout))
	if _, err := io.WriteString(c, passcode); err != nil {
		c.Close()
		return nil, fmt.Errorf("agent: sending passcode to %s: %w", addr, err)
	}
	var got [len(authorized)]byte
	if _, err := io.ReadFull(c, got[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("agent: %s did not authorize (wrong passcode or mapping full?): %w", addr, err)
	}
	if string(got[:]) != authorized {
		c.Close()
		return nil, fmt.Errorf("agent: %s answered %q, want %q", addr, got[:], authorized)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// Pool keeps connections authenticated at a public mapping's port1, as an
// agent does, and hands each to serve; when serve returns (the session is
// over) the connection is closed and a fresh one dialled.
type Pool struct {
	authed atomic.Int64
	wg     sync.WaitGroup
}

// StartPool starts size workers; they stop when ctx ends.
func StartPool(ctx context.Context, addr, passcode string, size int, serve func(net.Conn) error) *Pool {
	p := &Pool{}
	var d net.Dialer
	for range size {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for ctx.Err() == nil {
				c, err := Auth(ctx, &d, addr, passcode)
				if err != nil {
					time.Sleep(50 * time.Millisecond) // the Connector may be full for a moment
					continue
				}
				p.authed.Add(1)
				stop := context.AfterFunc(ctx, func() { c.Close() })
				serve(c)
				stop()
				c.Close()
			}
		}()
	}
	return p
}

// Authed returns how many connections the pool has authenticated so far.
func (p *Pool) Authed() int64 { return p.authed.Load() }

// Wait returns when every worker has stopped.
func (p *Pool) Wait() { p.wg.Wait() }

// Hold opens n authenticated connections that then stay idle, spread over
// the given source addresses so that one address's ephemeral ports do not
// run out. conc handshakes run at a time. On error the connections opened so
// far are returned with it, for the caller to close.
func Hold(ctx context.Context, addr, passcode string, n int, sources []net.IP, conc int) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	var (
		next    atomic.Int64
		firstMu sync.Mutex
		first   error
		wg      sync.WaitGroup
	)
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{}
			if len(sources) > 0 {
				d.LocalAddr = &net.TCPAddr{IP: sources[w%len(sources)]}
			}
			for {
				i := int(next.Add(1)) - 1
				if i >= n || hctx.Err() != nil {
					return
				}
				c, err := Auth(hctx, &d, addr, passcode)
				if err != nil {
					firstMu.Lock()
					if first == nil {
						first = fmt.Errorf("holding idle connection %d of %d: %w", i+1, n, err)
					}
					firstMu.Unlock()
					cancel()
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	out := conns[:0]
	for _, c := range conns {
		if c != nil {
			out = append(out, c)
		}
	}
	return out, first
}
