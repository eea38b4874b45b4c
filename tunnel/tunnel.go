package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Options tune a Tunnel beyond what its config says.
type Options struct {
	Logger *slog.Logger
	// Dialer dials the Connector and the local service. Default net.Dialer{}.
	Dialer *net.Dialer
	// Stdin and Stdout carry a raw private route when the config has no
	// localport (and no agent carries messages). Default: none, which is an
	// error for such a config.
	Stdin  io.Reader
	Stdout io.Writer
	// MaxMessage bounds one IoMessage on a private route or the agent's
	// websocket. Default DefaultMaxMessage.
	MaxMessage int
	// BackoffMin and BackoffMax bound the pause before redialling after a
	// failure: it doubles from Min up to Max, with jitter. Defaults 100 ms
	// and 30 s. A connection that ends after serving is redialled at once.
	BackoffMin, BackoffMax time.Duration
}

// DefaultMaxMessage is the largest IoMessage carried by default.
const DefaultMaxMessage = 16 << 20

// Stats are a Tunnel's counters for its current config.
type Stats struct {
	Generation    int64 // configs applied so far (1 after the first)
	Mode          string
	Authorized    int64 // connections authenticated and open now
	Idle          int64 // of those, waiting for a session's first bytes
	Sessions      int64 // sessions served, total
	Dials         int64 // dial attempts, total
	Rejected      int64 // dials refused by the Connector, total
	Failures      int64 // dials that failed otherwise, total
	Echoes        int64 // heartbeat echoes heard from the Connector, total
	MessagesOut   int64 // IoMessages sent over the route
	MessagesIn    int64 // IoMessages handed to the agent
	ReceiptsAcked int64 // receipts from the agent, acknowledged
}

// Tunnel runs one config at a time; a new config (from the agent) replaces
// the running one.
type Tunnel struct {
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	cur     *runner
	gen     int64
	changed chan struct{} // closed and replaced when any counter moves
}

// New builds a Tunnel.
func New(opts Options) *Tunnel {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Dialer == nil {
		opts.Dialer = &net.Dialer{}
	}
	if opts.MaxMessage <= 0 {
		opts.MaxMessage = DefaultMaxMessage
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = 100 * time.Millisecond
	}
	if opts.BackoffMax < opts.BackoffMin {
		opts.BackoffMax = 30 * time.Second
	}
	return &Tunnel{opts: opts, log: opts.Logger, changed: make(chan struct{})}
}

// Stats returns the current config's counters.
func (t *Tunnel) Stats() Stats {
	t.mu.Lock()
	r, gen := t.cur, t.gen
	t.mu.Unlock()
	if r == nil {
		return Stats{Generation: gen}
	}
	s := r.stats()
	s.Generation = gen
	return s
}

// Wait blocks until ok(Stats) holds or ctx is done.
func (t *Tunnel) Wait(ctx context.Context, ok func(Stats) bool) error {
	for {
		t.mu.Lock()
		ch := t.changed
		t.mu.Unlock()
		if ok(t.Stats()) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%w (stats %+v)", ctx.Err(), t.Stats())
		case <-time.After(100 * time.Millisecond): // counters that moved without a notify
		}
	}
}

func (t *Tunnel) notify() {
	t.mu.Lock()
	close(t.changed)
	t.changed = make(chan struct{})
	t.mu.Unlock()
}

// RunConfig runs cfg until ctx is done. A private route with no localport
// carries Options.Stdin/Stdout and returns when they are done.
func (t *Tunnel) RunConfig(ctx context.Context, cfg Config) error {
	r, err := t.start(cfg, nil)
	if err != nil {
		return err
	}
	return r.run(ctx)
}

func (t *Tunnel) start(cfg Config, agent *agentLink) (*runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tc, err := cfg.TLSConfig()
	if err != nil {
		return nil, err
	}
	if cfg.Mode == "private" && agent == nil && cfg.LocalPort == 0 && (t.opts.Stdin == nil || t.opts.Stdout == nil) {
		return nil, fieldErr("localport", "a private route without an agent needs a local port to listen on (or standard input and output)")
	}
	r := &runner{t: t, cfg: cfg, tls: tc, agent: agent, log: t.log.With("connector", cfg.Addr(), "mode", cfg.Mode)}
	t.mu.Lock()
	t.cur = r
	t.gen++
	t.mu.Unlock()
	t.notify()
	return r, nil
}

// runner runs one config.
type runner struct {
	t     *Tunnel
	cfg   Config
	tls   *tls.Config
	agent *agentLink // private route carries IoMessages to and from it
	log   *slog.Logger
	local string // LocalAddr with "iofog" resolved, once per config

	authorized, idle, sessions, dials, rejected, failures, echoes atomic.Int64
}

func (r *runner) stats() Stats {
	s := Stats{Mode: r.cfg.Mode, Authorized: r.authorized.Load(), Idle: r.idle.Load(), Sessions: r.sessions.Load(),
		Dials: r.dials.Load(), Rejected: r.rejected.Load(), Failures: r.failures.Load(), Echoes: r.echoes.Load()}
	if r.agent != nil {
		s.MessagesOut, s.MessagesIn, s.ReceiptsAcked = r.agent.out.Load(), r.agent.in.Load(), r.agent.receipts.Load()
	}
	return s
}

func (r *runner) run(ctx context.Context) error {
	if r.cfg.Host == AutoHost {
		if err := r.resolveAuto(ctx); err != nil {
			return nil // ctx is done
		}
	}
	r.local = resolveLocal(ctx, r.cfg.LocalAddr())
	if r.cfg.Mode == "public" {
		var wg sync.WaitGroup
		for range r.cfg.Count() {
			wg.Go(func() { r.worker(ctx, r.servePublic) })
		}
		wg.Wait()
		return nil
	}
	if r.agent != nil {
		r.worker(ctx, r.agent.route)
		return nil
	}
	if r.cfg.LocalPort == 0 {
		return r.runStdio(ctx)
	}
	ln, err := net.Listen("tcp", r.local)
	if err != nil {
		return fmt.Errorf("private route: listen on localport: %w", err)
	}
	r.log.Info("private route offered locally", "listen", ln.Addr().String())
	accepted := make(chan net.Conn)
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case accepted <- c:
			case <-ctx.Done():
				c.Close()
				return
			}
		}
	}()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	rl := &rawLocal{accepted: accepted, log: r.log}
	r.worker(ctx, rl.route)
	if rl.pending != nil {
		rl.pending.Close()
	}
	return nil
}

// worker keeps one connection up: dial (with backoff after failures),
// serve, and redial at once after a connection that served.
func (r *runner) worker(ctx context.Context, serve func(ctx context.Context, c *conn)) {
	b := backoff{min: r.t.opts.BackoffMin, max: r.t.opts.BackoffMax}
	for ctx.Err() == nil {
		r.dials.Add(1)
		c, err := dial(ctx, r.cfg, r.tls, r.t.opts.Dialer, &r.echoes)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, ErrRejected) {
				r.rejected.Add(1)
			} else {
				r.failures.Add(1)
			}
			r.t.notify()
			d := b.next()
			r.log.Debug("connection to the Connector failed; retrying", "err", err, "retry_in", d)
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return
			}
			continue
		}
		b.reset()
		stop := context.AfterFunc(ctx, func() { c.Close() })
		r.authorized.Add(1)
		r.t.notify()
		serve(ctx, c)
		c.Close()
		stop()
		r.authorized.Add(-1)
		r.t.notify()
		if reason := c.reason.Load(); reason != nil {
			r.log.Info("connection to the Connector dropped; reconnecting", "reason", *reason)
		}
	}
}

// servePublic waits for a public client's first bytes on a pooled
// connection, then dials the microservice and carries the session.
func (r *runner) servePublic(ctx context.Context, c *conn) {
	r.idle.Add(1)
	r.t.notify()
	buf := make([]byte, 16<<10)
	n, err := c.Read(buf)
	r.idle.Add(-1)
	r.t.notify()
	if n == 0 {
		if err != nil && ctx.Err() == nil && c.reason.Load() == nil {
			r.log.Debug("pooled connection ended before a session", "err", err)
		}
		return
	}
	r.sessions.Add(1)
	local, err := r.t.opts.Dialer.DialContext(ctx, "tcp", r.local)
	if err != nil {
		r.log.Warn("cannot reach the local microservice; dropping the session", "local", r.local, "err", err)
		return
	}
	defer local.Close()
	c.session(local, func() ([]byte, error) { return buf[:n], nil })
}

// rawLocal pairs a private route with connections accepted on localport.
// The route is one long byte stream, as the Connector keeps it: local
// connections come and go, one at a time, and each carries the stream on
// from where the last one left it. Route bytes that arrive while no local
// connection is open wait (the route is not read meanwhile beyond one
// chunk); a local connection that outlives a route waits for the next one.
type rawLocal struct {
	accepted <-chan net.Conn
	pending  net.Conn // a local connection whose route went away
	chunk    []byte   // read from a route, not yet written to a local connection
	log      *slog.Logger
}

func (rl *rawLocal) route(ctx context.Context, c *conn) {
	chunks := make(chan []byte)
	routeDone := make(chan struct{})
	go func() {
		defer close(routeDone)
		for {
			buf := make([]byte, 32<<10)
			n, err := c.Read(buf)
			if n > 0 {
				select {
				case chunks <- buf[:n]:
				case <-c.done:
					return
				}
			}
			if err != nil {
				c.Close()
				return
			}
		}
	}()
	for {
		local := rl.pending
		rl.pending = nil
		if local == nil {
			select {
			case local = <-rl.accepted:
				if local == nil {
					return
				}
			case <-routeDone:
				return
			case <-ctx.Done():
				return
			}
		}
		if !rl.carry(c, local, chunks, routeDone) {
			rl.pending = local
			return
		}
		local.Close()
	}
}

// carry runs one local connection against the route until the local
// connection ends (true) or the route does (false).
func (rl *rawLocal) carry(c *conn, local net.Conn, chunks <-chan []byte, routeDone <-chan struct{}) bool {
	localDone := make(chan struct{})
	stopUp := make(chan struct{})
	go func() {
		defer close(localDone)
		buf := make([]byte, 32<<10)
		for {
			n, err := local.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					c.Close()
					return
				}
			}
			if err != nil {
				return
			}
			select {
			case <-stopUp:
				return
			default:
			}
		}
	}()
	defer close(stopUp)
	for {
		if rl.chunk != nil {
			if _, err := local.Write(rl.chunk); err != nil {
				local.Close()
				<-localDone
				return true // the chunk waits for the next local connection
			}
			rl.chunk = nil
		}
		select {
		case rl.chunk = <-chunks:
		case <-localDone:
			return true
		case <-routeDone:
			// Unblock the local reader without losing the connection:
			// it carries on over the next route.
			local.SetReadDeadline(time.Now())
			<-localDone
			local.SetReadDeadline(time.Time{})
			return false
		}
	}
}

// runStdio carries one private route session over standard input and
// output, then returns.
func (r *runner) runStdio(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.worker(ctx, func(ctx context.Context, c *conn) {
		r.sessions.Add(1)
		c.session(stdio{r.t.opts.Stdin, r.t.opts.Stdout}, nil)
		cancel()
	})
	return nil
}

// stdio is standard input and output as one local connection.
type stdio struct {
	in  io.Reader
	out io.Writer
}

func (s stdio) Read(p []byte) (int, error)  { return s.in.Read(p) }
func (s stdio) Write(p []byte) (int, error) { return s.out.Write(p) }
func (s stdio) Close() error {
	if c, ok := s.out.(io.Closer); ok {
		c.Close()
	}
	return nil
}

// resolveLocal maps the agent's "iofog" host name to loopback where it does
// not resolve (outside the agent's container network).
func resolveLocal(ctx context.Context, hostport string) string {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil || host != "iofog" {
		return hostport
	}
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := net.DefaultResolver.LookupHost(lctx, host); err != nil {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return hostport
}

// backoff is exponential with jitter, so many tunnels that lost the same
// Connector do not redial it in step.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else if b.cur *= 2; b.cur > b.max {
		b.cur = b.max
	}
	// Uniform in [cur/2, cur*3/2).
	return b.cur/2 + time.Duration(rand.Int64N(int64(b.cur)))
}

func (b *backoff) reset() { b.cur = 0 }
