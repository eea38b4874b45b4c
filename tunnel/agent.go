package tunnel

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/eclipse-iofog/iofog-connector/wire"
)

// DefaultAgentURL is where an ioFog agent serves its containers.
const DefaultAgentURL = "http://iofog:54321"

// Agent says how to reach the local ioFog agent.
type Agent struct {
	// URL is the agent's base URL; DefaultAgentURL when empty. A host of
	// "iofog" that does not resolve is replaced by 127.0.0.1.
	URL string
	// ID is this container's id as the agent knows it (SELFNAME).
	ID string
}

func (a Agent) base(ctx context.Context) (*url.URL, error) {
	s := a.URL
	if s == "" {
		s = DefaultAgentURL
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("agent URL %q: want http://HOST:PORT", s)
	}
	u.Host = resolveLocal(ctx, u.Host)
	return u, nil
}

func (a Agent) wsURL(base *url.URL, path string) string {
	u := *base
	u.Scheme = "ws"
	if base.Scheme == "https" {
		u.Scheme = "wss"
	}
	u.Path = path + url.PathEscape(a.ID)
	return u.String()
}

// FetchConfig asks the agent for this container's config.
func (a Agent) FetchConfig(ctx context.Context, hc *http.Client) (Config, error) {
	base, err := a.base(ctx)
	if err != nil {
		return Config{}, err
	}
	body, _ := json.Marshal(map[string]string{"id": a.ID})
	u := base.JoinPath("/v2/config/get").String()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return Config{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return Config{}, fmt.Errorf("ask the agent for the config: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 2*maxConfigSize))
	if err != nil {
		return Config{}, fmt.Errorf("read the agent's config reply: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return Config{}, fmt.Errorf("agent answered %s to %s: %.200s", resp.Status, u, data)
	}
	var reply struct {
		Config *string `json:"config"`
	}
	if err := json.Unmarshal(data, &reply); err != nil || reply.Config == nil {
		return Config{}, fmt.Errorf("agent reply from %s has no \"config\" string: %.200s", u, data)
	}
	return ParseConfig("config from "+u, []byte(*reply.Config))
}

// RunFromAgent fetches the config from the agent, runs it, and replaces it
// whenever the agent signals a change on its control websocket. In private
// mode the route carries IoMessages to and from the agent's message
// websocket. It returns when ctx is done.
func (t *Tunnel) RunFromAgent(ctx context.Context, a Agent) error {
	if a.ID == "" {
		return errors.New("agent: no container id: set SELFNAME (the agent sets it in the container) or --id")
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	signals := make(chan struct{}, 1)
	go t.followControl(ctx, a, signals)
	link := &agentLink{t: t, a: a, log: t.log.With("agent", a.ID), fromAgent: make(chan []byte), up: make(chan struct{})}
	linkUp := false

	b := backoff{min: t.opts.BackoffMin, max: t.opts.BackoffMax}
	var (
		cur    Config
		stop   context.CancelFunc
		done   chan struct{}
		have   bool
		fetchC = make(chan struct{}, 1)
	)
	fetchC <- struct{}{}
	for {
		select {
		case <-ctx.Done():
			if stop != nil {
				stop()
				<-done
			}
			return nil
		case <-signals:
			t.log.Info("agent signalled a new config")
		case <-fetchC:
		}
		cfg, err := a.FetchConfig(ctx, hc)
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			d := b.next()
			t.log.Warn("cannot get the config from the agent; retrying", "err", err, "retry_in", d)
			go func() {
				select {
				case <-time.After(d):
					select {
					case fetchC <- struct{}{}:
					default:
					}
				case <-ctx.Done():
				}
			}()
			continue
		}
		b.reset()
		if have && cfg == cur {
			continue
		}
		if stop != nil {
			stop()
			<-done
		}
		var l *agentLink
		if cfg.Mode == "private" {
			l = link
			if !linkUp {
				go link.run(ctx)
				linkUp = true
			}
		}
		r, err := t.start(cfg, l)
		if err != nil {
			t.log.Error("the agent's config cannot be used", "err", err)
			stop, have = nil, false
			continue
		}
		t.log.Info("running the agent's config", "mode", cfg.Mode, "connector", cfg.Addr())
		cur, have = cfg, true
		rctx, cancel := context.WithCancel(ctx)
		stop, done = cancel, make(chan struct{})
		go func(done chan struct{}) { r.run(rctx); close(done) }(done)
	}
}

// followControl keeps the agent's control websocket open and turns each
// control signal into a (coalesced) request to fetch the config again.
func (t *Tunnel) followControl(ctx context.Context, a Agent, signals chan<- struct{}) {
	b := backoff{min: t.opts.BackoffMin, max: t.opts.BackoffMax}
	for ctx.Err() == nil {
		err := func() error {
			base, err := a.base(ctx)
			if err != nil {
				return err
			}
			ws, _, err := websocket.Dial(ctx, a.wsURL(base, "/v2/control/socket/id/"), nil)
			if err != nil {
				return err
			}
			defer ws.CloseNow()
			ws.SetReadLimit(64 << 10)
			b.reset()
			for {
				_, p, err := ws.Read(ctx)
				if err != nil {
					return err
				}
				if len(p) > 0 && p[0] == codeControl {
					if err := ws.Write(ctx, websocket.MessageBinary, []byte{codeAck}); err != nil {
						return err
					}
					select {
					case signals <- struct{}{}:
					default:
					}
				}
			}
		}()
		if ctx.Err() != nil {
			return
		}
		d := b.next()
		t.log.Debug("control websocket down; reconnecting", "err", err, "retry_in", d)
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
}

// agentLink is the agent's message websocket, kept open for the life of
// the tunnel, whichever route carries its messages.
type agentLink struct {
	t   *Tunnel
	a   Agent
	log *slog.Logger

	fromAgent chan []byte // messages from the agent for the route
	retry     []byte      // taken from the agent, not yet written to a route
	mu        sync.Mutex
	ws        *websocket.Conn // nil while down
	up        chan struct{}   // closed when ws is set; replaced when it drops

	out, in, receipts atomic.Int64
}

func (l *agentLink) run(ctx context.Context) {
	b := backoff{min: l.t.opts.BackoffMin, max: l.t.opts.BackoffMax}
	for ctx.Err() == nil {
		err := l.session(ctx, &b)
		if ctx.Err() != nil {
			return
		}
		d := b.next()
		l.log.Debug("message websocket down; reconnecting", "err", err, "retry_in", d)
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
}

func (l *agentLink) session(ctx context.Context, b *backoff) error {
	base, err := l.a.base(ctx)
	if err != nil {
		return err
	}
	ws, _, err := websocket.Dial(ctx, l.a.wsURL(base, "/v2/message/socket/id/"), nil)
	if err != nil {
		return err
	}
	defer ws.CloseNow()
	ws.SetReadLimit(int64(l.t.opts.MaxMessage) + 5)
	b.reset()
	l.mu.Lock()
	l.ws = ws
	close(l.up)
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.ws = nil
		l.up = make(chan struct{})
		l.mu.Unlock()
	}()
	for {
		_, p, err := ws.Read(ctx)
		if err != nil {
			return err
		}
		if len(p) == 0 {
			continue
		}
		switch p[0] {
		case codeMessage:
			msg, err := parseMessageFrame(p, l.t.opts.MaxMessage)
			if err != nil {
				l.log.Warn("dropping a bad message from the agent", "err", err)
				continue
			}
			if err := ws.Write(ctx, websocket.MessageBinary, []byte{codeAck}); err != nil {
				return err
			}
			// Wait for a route to take it: the agent's socket is not read
			// meanwhile, so messages queue in the agent, not here.
			select {
			case l.fromAgent <- bytes.Clone(msg):
			case <-ctx.Done():
				return ctx.Err()
			}
		case codeReceipt:
			if _, err := parseReceipt(p); err != nil {
				l.log.Warn("bad receipt from the agent", "err", err)
			}
			l.receipts.Add(1)
			if err := ws.Write(ctx, websocket.MessageBinary, []byte{codeAck}); err != nil {
				return err
			}
			l.t.notify()
		}
	}
}

// toAgent posts a message on the message websocket, waiting for it to be up.
func (l *agentLink) toAgent(ctx context.Context, msg []byte) error {
	frame := messageFrame(msg)
	for {
		l.mu.Lock()
		ws, up := l.ws, l.up
		l.mu.Unlock()
		if ws != nil {
			if err := ws.Write(ctx, websocket.MessageBinary, frame); err == nil {
				l.in.Add(1)
				l.t.notify()
				return nil
			}
			select { // the session notices the broken socket and replaces it
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		select {
		case <-up:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// route carries IoMessages both ways over one route connection: each
// message from the agent goes out followed by TXEND; each one that arrives
// is handed to the agent. A message taken from the agent whose write to the
// route fails is sent again on the next route.
func (l *agentLink) route(ctx context.Context, c *conn) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		defer cancel()
		br := bufio.NewReaderSize(c, 64<<10)
		for {
			msg, framed, err := readRouteMessage(br, l.t.opts.MaxMessage)
			if err != nil {
				if !errors.Is(err, io.EOF) && ctx.Err() == nil {
					l.log.Warn("private route ended", "err", err)
				}
				c.Close()
				return
			}
			if err := l.toAgent(ctx, msg); err != nil {
				return
			}
			// A sender of bare messages waits for this ACK (up to two
			// seconds) before its next message; one that wraps them does
			// not expect it and would take it for data.
			if !framed {
				if _, err := c.Write([]byte(wire.Ack)); err != nil {
					return
				}
			}
		}
	}()
	for {
		msg := l.retry
		if msg == nil {
			select {
			case msg = <-l.fromAgent:
			case <-ctx.Done():
				return
			case <-c.done:
				return
			}
		}
		l.retry = msg
		// TXEND goes in its own write: some receivers recognise it only
		// as a read of its own.
		if _, err := c.Write(msg); err != nil {
			return
		}
		if _, err := c.Write([]byte(wire.TxEnd)); err != nil {
			return
		}
		l.retry = nil
		l.out.Add(1)
		l.t.notify()
	}
}
