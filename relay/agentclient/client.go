package agentclient

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Options tune a Client beyond what the Controller's config says.
type Options struct {
	Logger *slog.Logger
	// Handler, when set, serves each authenticated connection instead of
	// piping it to LocalHost:LocalPort; the connection is closed and
	// redialled when it returns. Private routes in tests use it.
	Handler func(ctx context.Context, c net.Conn)
	// RetryDelay is the pause before redialling after a failed dial or a
	// rejected passcode. Default 1 s.
	RetryDelay time.Duration
	// Dialer dials the Connector (e.g. to set a local address when a
	// benchmark needs more than one source address). Default net.Dialer{}.
	Dialer *net.Dialer
	// DialConcurrency caps dials and handshakes in flight, so a client
	// holding thousands of connections ramps up instead of hitting the
	// Connector with all of them at once. Default 64.
	DialConcurrency int
}

// Stats are a Client's counters.
type Stats struct {
	Authorized int64 // connections authenticated and open now
	Idle       int64 // of those, waiting for a public client's bytes
	Sessions   int64 // sessions served (payload seen), total
	Dials      int64 // dial attempts, total
	Rejected   int64 // dials refused by the Connector, total
	Failures   int64 // dials that failed otherwise, total
}

// Client keeps ConnectionCount authenticated connections open, as the agent
// container does. In public mode each connection waits for a public client's
// first bytes, then dials the local microservice and pipes both ways; when
// either end closes, the connection is replaced with a fresh one. In private
// mode each connection is piped to the local service at once (or given to
// Options.Handler).
type Client struct {
	cfg  Config
	tls  *tls.Config
	opts Options
	log  *slog.Logger

	authorized, idle                    atomic.Int64
	sessions, dials, rejected, failures atomic.Int64
	mu                                  sync.Mutex
	changed                             chan struct{} // closed and replaced when authorized changes
	dialing                             chan struct{} // semaphore of DialConcurrency
}

// New checks the config and builds a Client; Run starts it.
func New(cfg Config, opts Options) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tc, err := cfg.TLSConfig()
	if err != nil {
		return nil, err
	}
	if cfg.Mode == "public" && cfg.LocalPort == 0 && opts.Handler == nil {
		return nil, errors.New("agent config: field localport: a public mapping needs the microservice's port")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.RetryDelay == 0 {
		opts.RetryDelay = time.Second
	}
	if opts.Dialer == nil {
		opts.Dialer = &net.Dialer{}
	}
	if opts.DialConcurrency <= 0 {
		opts.DialConcurrency = 64
	}
	return &Client{cfg: cfg, tls: tc, opts: opts, log: opts.Logger.With("connector", cfg.addr()),
		changed: make(chan struct{}), dialing: make(chan struct{}, opts.DialConcurrency)}, nil
}

// Run keeps the connections up until ctx is done.
func (c *Client) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for range c.cfg.count() {
		wg.Go(func() { c.worker(ctx) })
	}
	wg.Wait()
	return nil
}

// Stats returns the current counters.
func (c *Client) Stats() Stats {
	return Stats{
		Authorized: c.authorized.Load(), Idle: c.idle.Load(), Sessions: c.sessions.Load(),
		Dials: c.dials.Load(), Rejected: c.rejected.Load(), Failures: c.failures.Load(),
	}
}

// WaitAuthorized blocks until at least n connections are authenticated and
// idle (ready for a public client), or ctx is done.
func (c *Client) WaitAuthorized(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		ch := c.changed
		c.mu.Unlock()
		if c.idle.Load() >= int64(n) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *Client) notify() {
	c.mu.Lock()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

func (c *Client) worker(ctx context.Context) {
	for ctx.Err() == nil {
		select {
		case c.dialing <- struct{}{}:
		case <-ctx.Done():
			return
		}
		c.dials.Add(1)
		conn, err := dial(ctx, c.cfg, c.tls, c.opts.Dialer)
		<-c.dialing
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, ErrRejected) {
				c.rejected.Add(1)
			} else {
				c.failures.Add(1)
			}
			c.log.Debug("agent connection failed; retrying", "err", err, "retry_in", c.opts.RetryDelay)
			select {
			case <-time.After(c.opts.RetryDelay):
			case <-ctx.Done():
				return
			}
			continue
		}
		c.serve(ctx, conn)
	}
}

// serve runs one authenticated connection until it ends.
func (c *Client) serve(ctx context.Context, conn *Conn) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	c.authorized.Add(1)
	defer func() { c.authorized.Add(-1); c.notify() }()

	if c.opts.Handler != nil && c.cfg.Mode == "private" {
		c.sessions.Add(1)
		c.opts.Handler(ctx, conn)
		return
	}
	var first []byte
	if c.cfg.Mode == "public" {
		c.idle.Add(1)
		c.notify()
		buf := make([]byte, 512)
		n, err := conn.Read(buf)
		c.idle.Add(-1)
		if err != nil && n == 0 {
			if ctx.Err() == nil {
				c.log.Debug("pooled connection ended before a session", "err", err)
			}
			return
		}
		first = buf[:n]
		c.sessions.Add(1)
		if c.opts.Handler != nil {
			c.opts.Handler(ctx, &prefixedConn{Conn: conn, prefix: first})
			return
		}
	} else {
		c.sessions.Add(1)
	}
	local, err := (&net.Dialer{}).DialContext(ctx, "tcp", c.cfg.localAddr())
	if err != nil {
		c.log.Warn("cannot reach the local microservice; dropping the session", "local", c.cfg.localAddr(), "err", err)
		return
	}
	defer local.Close()
	if len(first) > 0 {
		if _, err := local.Write(first); err != nil {
			return
		}
	}
	pipe(conn, local)
}

// pipe copies both ways and returns when either direction ends, closing
// both, as the agent container does.
func pipe(conn *Conn, local net.Conn) {
	done := make(chan struct{}, 2)
	go func() { io.Copy(local, conn); done <- struct{}{} }()
	go func() { io.Copy(conn, local); done <- struct{}{} }()
	<-done
	conn.Close()
	local.Close()
	<-done
}

// prefixedConn hands a Handler the bytes that were read while waiting.
type prefixedConn struct {
	*Conn
	prefix []byte
}

func (p *prefixedConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}
