// Package relay is the Connector: the port pool, mappings and their
// listeners, agent authentication and heartbeats, public and private
// pairing, the control API and the mapping store. It speaks the ioFog 1.x
// Connector protocol (PROTOCOL.md) with the original's defects fixed.
package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eclipse-iofog/iofog-connector/relay/portpool"
	"github.com/eclipse-iofog/iofog-connector/schema"
)

// PortGate opens and closes mapping ports in a firewall.
type PortGate interface {
	OpenPorts(ports ...uint16) error
	ClosePorts(ports ...uint16) error
}

// Options configure a Connector.
type Options struct {
	Config            *schema.Config
	StateDir          string // configs.json lives here
	CertFile, KeyFile string // used when !Config.Dev
	Version           string // reported by status and commandline version
	Gate              PortGate
	Logger            *slog.Logger
	// Collectors are extra metrics served on /metrics (e.g. firewall counters).
	Collectors []prometheus.Collector
	// Update, when set, serves /api/v2/update and /api/v2/update/status
	// (the appliance's in-place updates) behind the same API and its rules.
	Update http.Handler
}

// DefaultPublicWait is how long a public client waits for a free agent
// connection when the config does not say (PROTOCOL.md §7.5).
const DefaultPublicWait = 10 * time.Second

// portHold is how long a port that something else holds is skipped before
// the pool offers it again (§7.9).
const portHold = time.Minute

// Connector is one running Connector.
type Connector struct {
	opts       Options
	cfg        *schema.Config
	log        *slog.Logger
	storePath  string
	apiTLS     *tls.Config // nil in dev mode
	dataTLS    *tls.Config // nil in dev mode
	publicWait time.Duration
	met        *metrics
	bufs       sync.Pool // *[]byte of bigBuf
	smallBufs  sync.Pool // *[]byte of smallCopy, for short bursts

	// mu serializes adds, removes and store writes, and guards the pool
	// and the mapping table.
	mu       sync.Mutex
	pool     *portpool.Pool
	mappings map[string]*mapping
	order    []string // store order
	rewrite  bool     // the store must be rewritten at start (it was restored)

	apiLn    net.Listener
	ready    chan struct{}
	stopOnce sync.Once
	stopReq  chan struct{}
}

// New loads the mapping store and, unless in dev mode, the TLS files. It
// opens no sockets; Run does.
func New(opts Options) (*Connector, error) {
	if opts.Config == nil {
		return nil, errors.New("relay: no config")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.StateDir == "" {
		return nil, errors.New("relay: no state directory")
	}
	c := &Connector{
		opts: opts, cfg: opts.Config, log: opts.Logger,
		storePath:  filepath.Join(opts.StateDir, StoreFile),
		publicWait: opts.Config.Relay.PublicWait.Duration,
		mappings:   map[string]*mapping{},
		ready:      make(chan struct{}),
		stopReq:    make(chan struct{}),
	}
	if c.publicWait <= 0 {
		c.publicWait = DefaultPublicWait
	}
	c.bufs.New = func() any { b := make([]byte, bigBuf); return &b }
	c.smallBufs.New = func() any { b := make([]byte, smallCopy); return &b }
	if !c.cfg.Dev {
		cert, err := loadKeyPair(opts.CertFile, opts.KeyFile)
		if err != nil {
			return nil, err
		}
		c.apiTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		c.dataTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	pool, err := portpool.New(c.cfg.Ports, c.cfg.Exclude)
	if err != nil {
		return nil, fmt.Errorf("port pool from the config's ports and exclude: %w", err)
	}
	c.pool = pool
	recs, rewrite, err := loadStore(c.storePath, c.log, time.Now())
	if err != nil {
		return nil, err
	}
	c.rewrite = rewrite
	for _, r := range recs {
		for _, p := range []uint16{r.Port1, r.Port2} {
			if err := c.pool.Reserve(p); err != nil {
				// The agents know this port; keep serving it even though
				// the pool no longer offers it.
				c.log.Warn("stored mapping uses a port outside the configured pool; keeping it", "mapping", r.ID, "port", p, "err", err)
			}
		}
		c.mappings[r.ID] = newMapping(c, r)
		c.order = append(c.order, r.ID)
	}
	c.met, err = newMetrics(c.snapshot, opts.Collectors)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return c, nil
}

func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	const hint = "dev is false, so the API and every data port need TLS; create the pair with `iofog-connector cert` or set dev to true"
	if certFile == "" || keyFile == "" {
		return tls.Certificate{}, errors.New("no TLS certificate and key files configured: " + hint)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("TLS certificate %s: %w (%s)", certFile, err, hint)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("TLS key %s: %w (%s)", keyFile, err, hint)
	}
	// X509KeyPair takes PKCS#8, PKCS#1 and SEC1 (EC) keys alike.
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("TLS certificate %s with key %s: %w", certFile, keyFile, err)
	}
	return cert, nil
}

// APIAddr is the API listener's address, valid once Ready is closed.
func (c *Connector) APIAddr() net.Addr {
	select {
	case <-c.ready:
		return c.apiLn.Addr()
	default:
		return nil
	}
}

// Ready is closed when the API and the stored mappings' listeners are up.
func (c *Connector) Ready() <-chan struct{} { return c.ready }

// requestStop makes Run shut down gracefully (commandline stop).
func (c *Connector) requestStop() { c.stopOnce.Do(func() { close(c.stopReq) }) }

// Run serves until ctx is done or a `commandline stop`, then shuts down
// gracefully: stops accepting, closes every connection, flushes the store.
func (c *Connector) Run(ctx context.Context) error {
	listenCtx, cancelListen := context.WithCancel(ctx)
	defer cancelListen()

	c.mu.Lock()
	inactive := 0
	for _, id := range c.order {
		m := c.mappings[id]
		for i := range 2 {
			ln, err := c.listen(m.port(i))
			if err != nil {
				inactive++
				c.log.Error("cannot reopen a stored mapping's port; retrying in the background", "mapping", id, "port", m.port(i), "err", err)
				go c.retryListen(listenCtx, m, i)
				continue
			}
			m.ln[i] = ln
		}
		m.serve()
	}
	if c.rewrite {
		if err := saveStore(c.storePath, c.records()); err != nil {
			c.log.Error("cannot rewrite the restored mapping store", "err", err)
		}
	}
	var ports []uint16
	for _, r := range c.records() {
		ports = append(ports, r.Port1, r.Port2)
	}
	c.mu.Unlock()
	if c.opts.Gate != nil {
		if len(ports) > 0 {
			if err := c.opts.Gate.OpenPorts(ports...); err != nil {
				c.log.Error("cannot open stored mappings' ports in the firewall", "err", err)
			}
		}
	}

	scheme, port := "http", c.cfg.API.HTTPPort
	if !c.cfg.Dev {
		scheme, port = "https", c.cfg.API.HTTPSPort
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(c.cfg.API.Listen, strconv.Itoa(port)))
	if err != nil {
		c.closeAll("connector failed to start")
		return fmt.Errorf("control API: listen on port %d: %w", port, err)
	}
	if c.apiTLS != nil {
		ln = tls.NewListener(ln, c.apiTLS)
	}
	c.apiLn = ln
	srv := &http.Server{
		Handler:           c.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          slog.NewLogLogger(c.log.Handler(), slog.LevelDebug),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	close(c.ready)

	c.mu.Lock()
	n := len(c.mappings)
	free := c.pool.Free()
	c.mu.Unlock()
	mode := "dev (plain HTTP and TCP)"
	if !c.cfg.Dev {
		mode = "TLS (HTTPS API, TLS on every data port)"
	}
	c.log.Info("iofog-connector is up and running",
		"api", fmt.Sprintf("%s://%s/api/v2/", scheme, ln.Addr()), "mode", mode,
		"pool", fmt.Sprint(c.cfg.Ports), "exclude", fmt.Sprint(c.cfg.Exclude), "free_ports", free,
		"mappings", n, "inactive_ports", inactive, "version", c.opts.Version)

	var runErr error
	select {
	case <-ctx.Done():
		c.log.Info("shutting down: signal received")
	case <-c.stopReq:
		c.log.Info("shutting down: stop requested over the API")
	case err := <-served:
		runErr = fmt.Errorf("control API stopped: %w", err)
	}
	cancelListen()
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	srv.Shutdown(shutCtx)
	c.closeAll("connector shutting down")
	c.mu.Lock()
	err = saveStore(c.storePath, c.records())
	c.mu.Unlock()
	if err != nil && runErr == nil {
		runErr = err
	}
	c.log.Info("iofog-connector is stopped")
	return runErr
}

func (c *Connector) closeAll(why string) {
	c.mu.Lock()
	ms := make([]*mapping, 0, len(c.mappings))
	for _, m := range c.mappings {
		ms = append(ms, m)
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Go(func() { m.close(why) })
	}
	wg.Wait()
}

// retryListen keeps trying to reopen a stored mapping's port that something
// else held at start-up.
func (c *Connector) retryListen(ctx context.Context, m *mapping, i int) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.done:
			return
		case <-t.C:
		}
		ln, err := c.listen(m.port(i))
		if err != nil {
			continue
		}
		if !m.setListener(i, ln) {
			ln.Close()
			return
		}
		c.log.Info("reopened a stored mapping's port", "mapping", m.rec.ID, "port", m.port(i))
		return
	}
}

// Keepalive on every data connection, so half-open agent and public
// connections are found even without traffic (§7.3).
const (
	keepIdle     = 30 * time.Second
	keepInterval = 10 * time.Second
	keepCount    = 3
)

// listen opens a data port on all interfaces. Keepalive is set once on the
// listening socket, which accepted connections inherit on Linux, instead of
// with four system calls on every accepted connection.
func (c *Connector) listen(port uint16) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1, Control: setKeepAlive}
	return lc.Listen(context.Background(), "tcp", ":"+strconv.Itoa(int(port)))
}

// records returns the store content in order. Caller holds c.mu.
func (c *Connector) records() []Record {
	out := make([]Record, 0, len(c.order))
	for _, id := range c.order {
		out = append(out, c.mappings[id].rec)
	}
	return out
}

func (c *Connector) snapshot() snapshot {
	c.mu.Lock()
	var s snapshot
	s.freePorts = c.pool.Free()
	ms := make([]*mapping, 0, len(c.mappings))
	for _, m := range c.mappings {
		ms = append(ms, m)
	}
	c.mu.Unlock()
	for _, m := range ms {
		if m.public {
			s.publicMappings++
		} else {
			s.privateMappings++
		}
		i, p := m.counts()
		s.idle += i
		s.paired += p
	}
	return s
}

// errNoPorts is the "507" of the original.
var errNoPorts = errors.New("no enough available ports")

type addRequest struct {
	public           bool
	max1, max2       int
	thresh1, thresh2 int64
}

// add creates a mapping; it returns only once the store is persisted and
// both listeners are open, and undoes everything if either fails.
func (c *Connector) add(req addRequest, newID func() string) (Record, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, lns, err := c.allocate()
	if err != nil {
		return Record{}, err
	}
	rec := Record{
		ID: newID(), Port1: p[0], Port2: p[1],
		MaxConnectionsPort1: req.max1, MaxConnectionsPort2: req.max2,
		PasscodePort1:                  newID(),
		HeartbeatAbsenceThresholdPort1: req.thresh1, HeartbeatAbsenceThresholdPort2: req.thresh2,
	}
	if !req.public {
		rec.PasscodePort2 = newID()
	}
	undo := func() {
		for i := range 2 {
			lns[i].Close()
			c.pool.Release(p[i])
		}
	}
	m := newMapping(c, rec)
	m.ln = lns
	c.mappings[rec.ID] = m
	c.order = append(c.order, rec.ID)
	if err := saveStore(c.storePath, c.records()); err != nil {
		delete(c.mappings, rec.ID)
		c.order = c.order[:len(c.order)-1]
		undo()
		return Record{}, err
	}
	if c.opts.Gate != nil {
		if err := c.opts.Gate.OpenPorts(p[0], p[1]); err != nil {
			delete(c.mappings, rec.ID)
			c.order = c.order[:len(c.order)-1]
			undo()
			if serr := saveStore(c.storePath, c.records()); serr != nil {
				c.log.Error("cannot undo a mapping in the store", "mapping", rec.ID, "err", serr)
			}
			return Record{}, fmt.Errorf("open ports %d and %d in the firewall: %w", p[0], p[1], err)
		}
	}
	m.serve()
	c.log.Info("mapping added", "mapping", rec.ID, "type", m.kind(), "port1", rec.Port1, "port2", rec.Port2,
		"maxconnections", rec.MaxConnectionsPort1, "threshold_ms", rec.HeartbeatAbsenceThresholdPort1, "free_ports", c.pool.Free())
	return rec, nil
}

// allocate takes two ports and opens both. A port that something else
// holds is put on hold in the pool and another is taken (§7.9).
func (c *Connector) allocate() ([2]uint16, [2]net.Listener, error) {
	var lns [2]net.Listener
	for {
		p1, p2, err := c.pool.Take2()
		if err != nil {
			return [2]uint16{}, lns, fmt.Errorf("%w (%d free in the pool)", errNoPorts, c.pool.Free())
		}
		ports := [2]uint16{p1, p2}
		var errs [2]error
		for i, p := range ports {
			lns[i], errs[i] = c.listen(p)
		}
		if errs[0] == nil && errs[1] == nil {
			return ports, lns, nil
		}
		var hard error
		for i, p := range ports {
			switch {
			case errs[i] == nil:
				lns[i].Close()
				c.pool.Release(p)
			case errors.Is(errs[i], syscall.EADDRINUSE):
				c.log.Warn("port is held by another program; skipping it for now", "port", p, "retry_after", portHold)
				c.pool.Hold(p, time.Now().Add(portHold))
			default:
				c.pool.Release(p)
				hard = errs[i]
			}
		}
		if hard != nil {
			return [2]uint16{}, [2]net.Listener{}, fmt.Errorf("open mapping port: %w", hard)
		}
	}
}

var errUnknownMapping = errors.New("mapping not found")

// remove deletes a mapping: store first, then listeners and connections,
// then the ports go back to the pool.
func (c *Connector) remove(id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.mappings[id]
	if !ok {
		return fmt.Errorf("%w: %s", errUnknownMapping, id)
	}
	i := slices.Index(c.order, id)
	delete(c.mappings, id)
	c.order = slices.Delete(c.order, i, i+1)
	if err := saveStore(c.storePath, c.records()); err != nil {
		c.mappings[id] = m
		c.order = slices.Insert(c.order, i, id)
		return err
	}
	m.close("mapping removed")
	for _, p := range []uint16{m.rec.Port1, m.rec.Port2} {
		if c.pool.Contains(p) {
			c.pool.Release(p)
		}
	}
	if c.opts.Gate != nil {
		if err := c.opts.Gate.ClosePorts(m.rec.Port1, m.rec.Port2); err != nil {
			c.log.Error("cannot close a removed mapping's ports in the firewall", "mapping", id, "err", err)
		}
	}
	c.log.Info("mapping removed", "mapping", id, "port1", m.rec.Port1, "port2", m.rec.Port2, "free_ports", c.pool.Free())
	return nil
}

func (c *Connector) lookup(id string) (*mapping, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.mappings[id]
	return m, ok
}

func (c *Connector) list() []Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.records()
}

func (c *Connector) stats() (mappings, free int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.mappings), c.pool.Free()
}
