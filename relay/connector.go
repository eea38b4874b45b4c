// Package relay is the Connector: the port pool, mappings and their
// listeners, agent authentication and heartbeats, public and private
// pairing, the control API and the mapping store. It speaks the ioFog 1.x
// Connector protocol (docs/protocol.md) with the original's defects fixed.
package relay

import (
	"cmp"
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
	"sync/atomic"
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
	// BeforeStoreWrite, if set, runs before every write of the mapping
	// store, with the writer's lock held. Tests use it to stand for a slow
	// disk.
	BeforeStoreWrite func()
	// Update, when set, serves /api/v2/update and /api/v2/update/status
	// (the appliance's in-place updates) behind the same API and its rules.
	Update http.Handler
}

// DefaultPublicWait is how long a public client waits for a free agent
// connection when the config does not say (docs/protocol.md §6.5).
const DefaultPublicWait = 10 * time.Second

// Defaults of the relay limits when a Config is built by hand (the config
// loader fills in the same values from the schema).
const (
	DefaultWriteTimeout       = 60 * time.Second
	DefaultMaxConnections     = 16384
	DefaultMaxUnauthenticated = 256
	DefaultMaxWaiting         = 256
	DefaultLogInterval        = 10 * time.Second
)

// portHold is how long a port that something else holds is skipped before
// the pool offers it again (§6.9).
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
	writeWait  time.Duration // relay.write_timeout
	logEvery   time.Duration // relay.log_interval
	maxUnauth  int           // per agent port
	maxWaiting int           // per public mapping
	maxConns   int64         // data connections overall, after the open-file cap
	nconns     atomic.Int64  // data connections open now
	met        *metrics
	bufs       sync.Pool // *[]byte of bigBuf
	smallBufs  sync.Pool // *[]byte of smallCopy, for short bursts

	// Two locks, so that readers (status, mapping list, /metrics) never
	// wait for the disk, the firewall or a drain. wmu serialises changes
	// (add, remove, start, stop) and is held across a store write and a
	// firewall call; mu guards the pool and the mapping table and is held
	// only for work in memory. wmu is taken before mu, never after.
	wmu      sync.Mutex
	preserve []func() error // guarded by wmu; see loaded.preserve
	rewrite  bool           // guarded by wmu; the store must be (re)written
	closing  bool           // guarded by wmu; Run is shutting down: no more changes

	mu       sync.Mutex
	pool     *portpool.Pool
	mappings map[string]*mapping
	order    []string              // store order
	down     map[string]*[2]string // why a mapping's port is not listening, by mapping id

	apiRefused prometheus.Counter

	apiLn    net.Listener
	ready    chan struct{}
	stopOnce sync.Once
	stopReq  chan struct{}

	page   http.Handler // GET /, if set (view.go)
	events eventRing    // recent events, for the status page (view.go)
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
		down:       map[string]*[2]string{},
		ready:      make(chan struct{}),
		stopReq:    make(chan struct{}),
	}
	if c.publicWait <= 0 {
		c.publicWait = DefaultPublicWait
	}
	rc := opts.Config.Relay
	c.writeWait = orDefault(rc.WriteTimeout.Duration, DefaultWriteTimeout)
	c.logEvery = orDefault(rc.LogInterval.Duration, DefaultLogInterval)
	c.maxUnauth = orDefault(rc.MaxUnauthenticated, DefaultMaxUnauthenticated)
	c.maxWaiting = orDefault(rc.MaxWaiting, DefaultMaxWaiting)
	c.maxConns = int64(orDefault(rc.MaxConnections, DefaultMaxConnections))
	c.bufs.New = func() any { b := make([]byte, bigBuf); return &b }
	c.smallBufs.New = func() any { b := make([]byte, smallCopy); return &b }
	if !c.cfg.Dev {
		cert, err := loadKeyPair(opts.CertFile, opts.KeyFile)
		if err != nil {
			return nil, err
		}
		c.apiTLS = serverTLS(cert)
		c.dataTLS = serverTLS(cert)
	}
	pool, err := portpool.New(c.cfg.Ports, c.cfg.Exclude)
	if err != nil {
		return nil, fmt.Errorf("port pool from the config's ports and exclude: %w", err)
	}
	c.pool = pool
	c.capConnections(pool.Free())
	st := loadStore(c.storePath, c.log, time.Now())
	c.rewrite, c.preserve = st.rewrite, st.preserve
	for _, r := range st.recs {
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
	c.apiRefused = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "iofog_connector", Name: "api_refused_total",
		Help: "API and /metrics requests refused because their source is not in api.allow."})
	c.met, err = newMetrics(c.snapshot, append([]prometheus.Collector{c.apiRefused}, opts.Collectors...))
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return c, nil
}

// serverTLS is the TLS setup of the API and of every data port: TLS 1.3,
// or TLS 1.2 with forward-secret AEAD suites only (no CBC, no SHA-1 MACs,
// no RSA key exchange). The Controller (Node.js) and the agents' network
// containers (Java 8 and later) all offer ECDHE with AES-GCM.
func serverTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		CipherSuites: []uint16{ // TLS 1.2 only; TLS 1.3 suites are all AEAD
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
	}
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

// Default API timeouts, when the config does not say.
const (
	DefaultAPIReadTimeout = 30 * time.Second
	DefaultAPIIdleTimeout = 2 * time.Minute
)

// Run serves until ctx is done or a `commandline stop`, then shuts down
// gracefully: stops accepting, closes every connection, flushes the store.
func (c *Connector) Run(ctx context.Context) error {
	listenCtx, cancelListen := context.WithCancel(ctx)
	defer cancelListen()

	// The API's port first: a stored mapping must never take it (it would
	// leave a Connector that nobody can talk to).
	scheme, port := "http", c.cfg.API.Port(c.cfg.Dev)
	if !c.cfg.Dev {
		scheme = "https"
	}
	handler, err := c.guard(c.routes())
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(c.cfg.API.Listen, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("control API: listen on port %d: %w", port, err)
	}
	if c.apiTLS != nil {
		ln = tls.NewListener(ln, c.apiTLS)
	}
	c.apiLn = ln

	inactive := c.openStored(listenCtx, uint16(port))

	readTimeout, idleTimeout := c.cfg.API.ReadTimeout.Duration, c.cfg.API.IdleTimeout.Duration
	if readTimeout <= 0 {
		readTimeout = DefaultAPIReadTimeout
	}
	if idleTimeout <= 0 {
		idleTimeout = DefaultAPIIdleTimeout
	}
	srv := &http.Server{
		Handler: handler,
		// A request, body included, must arrive within readTimeout, so a
		// client trickling bytes cannot hold a connection (and a file
		// descriptor) for long. There is no write timeout: the replies are
		// small, and cutting one off after the work was done would make
		// the Controller retry an add that succeeded.
		ReadHeaderTimeout: min(10*time.Second, readTimeout),
		ReadTimeout:       readTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(c.log.Handler(), slog.LevelDebug),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	close(c.ready)
	c.noteStarted()

	n, free := c.stats()
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
	// Changes still in flight (a slow store write outlasting the shutdown
	// grace) finish first; later ones are refused, so no mapping is added
	// once everything is closed.
	c.wmu.Lock()
	c.closing = true
	c.closeAll("connector shutting down")
	// Every add and remove is on disk before it is acknowledged; the store
	// is written here only if writing it at start failed.
	if c.rewrite {
		if err := c.persist(c.list()); err != nil {
			c.log.Error("cannot write the mapping store at shutdown; it stays as it was", "err", err)
		}
	}
	c.wmu.Unlock()
	c.log.Info("iofog-connector is stopped")
	return runErr
}

// openStored opens the stored mappings' listeners, rewrites the store if
// loading changed it, and opens their ports in the firewall. It returns
// how many ports could not be opened.
func (c *Connector) openStored(ctx context.Context, apiPort uint16) (inactive int) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var ms []*mapping
	c.mu.Lock()
	for _, id := range c.order {
		ms = append(ms, c.mappings[id])
	}
	c.mu.Unlock()
	var gated []uint16
	for _, m := range ms {
		for i := range 2 {
			p := m.port(i)
			if p == apiPort {
				inactive++
				why := fmt.Sprintf("port %d is the Connector's own API port; this mapping cannot listen there (remove it, or move the API with api.http_port / api.https_port)", p)
				c.setDown(m.rec.ID, i, why)
				c.log.Error("a stored mapping uses the API port; it stays inactive", "mapping", m.rec.ID, "port", p)
				continue
			}
			gated = append(gated, p)
			ln, err := c.listen(p)
			if err != nil {
				inactive++
				c.setDown(m.rec.ID, i, fmt.Sprintf("cannot listen on port %d: %v; retrying every 5 s", p, err))
				c.log.Error("cannot reopen a stored mapping's port; retrying in the background", "mapping", m.rec.ID, "port", p, "err", err)
				go c.retryListen(ctx, m, i)
				continue
			}
			m.ln[i] = ln
		}
		m.serve()
	}
	if c.rewrite {
		if err := c.persist(c.list()); err != nil {
			c.log.Error("cannot rewrite the restored mapping store; serving what was loaded", "err", err)
		} else {
			c.rewrite = false
		}
	}
	if c.opts.Gate != nil && len(gated) > 0 {
		if err := c.opts.Gate.OpenPorts(gated...); err != nil {
			c.log.Error("cannot open stored mappings' ports in the firewall", "err", err)
		}
	}
	return inactive
}

// setDown records why a mapping's port is not listening ("" when it is).
func (c *Connector) setDown(id string, i int, why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.down[id]
	if d == nil {
		if why == "" {
			return
		}
		d = new([2]string)
		c.down[id] = d
	}
	d[i] = why
	if d[0] == "" && d[1] == "" {
		delete(c.down, id)
	}
}

// persist writes recs as the store. The caller holds wmu and not mu.
func (c *Connector) persist(recs []Record) error {
	if c.opts.BeforeStoreWrite != nil {
		c.opts.BeforeStoreWrite()
	}
	for len(c.preserve) > 0 {
		if err := c.preserve[0](); err != nil {
			return fmt.Errorf("not writing the mapping store: %w", err)
		}
		c.preserve = c.preserve[1:]
	}
	return saveStore(c.storePath, recs)
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
		c.setDown(m.rec.ID, i, "")
		c.log.Info("reopened a stored mapping's port", "mapping", m.rec.ID, "port", m.port(i))
		return
	}
}

// Keepalive on every data connection, so half-open agent and public
// connections are found even without traffic (§6.3).
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

// errNoPorts is the "507" of the original, which said "No enough available
// ports". Controllers look only for the errormessage key, not its text.
var errNoPorts = errors.New("not enough available ports")

type addRequest struct {
	public           bool
	max1, max2       int
	thresh1, thresh2 int64
}

// add creates a mapping; it returns only once the store is on disk, the
// firewall lets the ports in and both listeners are open, and undoes
// everything if any of that fails.
//
// A full pool is refused before anything waits, so a Controller moves on
// to another Connector at once. Readers never wait for add: the ports are
// taken from the pool under mu, the store and the firewall are written
// under wmu only, and the mapping joins the table once it is stored.
func (c *Connector) add(req addRequest, newID func() string) (Record, error) {
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
		}
		c.mu.Lock()
		c.pool.Release(p[0])
		c.pool.Release(p[1])
		c.mu.Unlock()
	}
	m := newMapping(c, rec)
	m.ln = lns

	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closing {
		undo()
		return Record{}, errStopping
	}
	if err := c.persist(append(c.list(), rec)); err != nil {
		undo()
		return Record{}, err
	}
	if c.opts.Gate != nil {
		if err := c.opts.Gate.OpenPorts(p[0], p[1]); err != nil {
			if serr := c.persist(c.list()); serr != nil {
				c.log.Error("cannot undo a mapping in the store", "mapping", rec.ID, "err", serr)
			}
			undo()
			return Record{}, fmt.Errorf("open ports %d and %d in the firewall: %w", p[0], p[1], err)
		}
	}
	c.mu.Lock()
	c.mappings[rec.ID] = m
	c.order = append(c.order, rec.ID)
	free := c.pool.Free()
	c.mu.Unlock()
	m.serve()
	c.log.Info("mapping added", "mapping", rec.ID, "type", m.kind(), "port1", rec.Port1, "port2", rec.Port2,
		"maxconnections", rec.MaxConnectionsPort1, "threshold_ms", rec.HeartbeatAbsenceThresholdPort1, "free_ports", free)
	c.noteAdded(rec)
	return rec, nil
}

// allocate takes two ports and opens both. A port that something else
// holds is put on hold in the pool and another is taken (§6.9). The pool
// is locked only while ports are taken and given back.
func (c *Connector) allocate() ([2]uint16, [2]net.Listener, error) {
	var lns [2]net.Listener
	for {
		c.mu.Lock()
		p1, p2, err := c.pool.Take2()
		free := c.pool.Free()
		c.mu.Unlock()
		if err != nil {
			word := "ports"
			if free == 1 {
				word = "port"
			}
			return [2]uint16{}, lns, fmt.Errorf("%w: %d free %s in the pool and a mapping takes 2; remove mappings, widen ports, or add another Connector",
				errNoPorts, free, word)
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
		c.mu.Lock()
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
		c.mu.Unlock()
		if hard != nil {
			return [2]uint16{}, [2]net.Listener{}, fmt.Errorf("open mapping port: %w", hard)
		}
	}
}

var (
	errUnknownMapping = errors.New("mapping not found")
	errStopping       = errors.New("the Connector is shutting down; try again when it is back, or another Connector")
)

// remove deletes a mapping: store first, then the table (under wmu, so the
// next writer stores without it), then, with no lock held, its listeners
// and connections, the firewall, and last the pool, so that no later add
// can be given a port before it is closed everywhere.
func (c *Connector) remove(id string) error {
	c.wmu.Lock()
	c.mu.Lock()
	m, ok := c.mappings[id]
	var rest []Record
	if ok {
		rest = make([]Record, 0, len(c.order))
		for _, oid := range c.order {
			if oid != id {
				rest = append(rest, c.mappings[oid].rec)
			}
		}
	}
	c.mu.Unlock()
	if !ok {
		c.wmu.Unlock()
		return fmt.Errorf("%w: %s", errUnknownMapping, id)
	}
	if c.closing {
		c.wmu.Unlock()
		return errStopping
	}
	if err := c.persist(rest); err != nil {
		c.wmu.Unlock()
		return err
	}
	c.mu.Lock()
	delete(c.mappings, id)
	c.order = slices.DeleteFunc(c.order, func(oid string) bool { return oid == id })
	delete(c.down, id)
	c.mu.Unlock()
	c.wmu.Unlock()

	m.close("mapping removed")
	var ports []uint16
	for i := range 2 {
		// The API's port was never the mapping's: it stays open.
		if p := m.port(i); int(p) != c.cfg.API.Port(c.cfg.Dev) {
			ports = append(ports, p)
		}
	}
	if c.opts.Gate != nil && len(ports) > 0 {
		if err := c.opts.Gate.ClosePorts(ports...); err != nil {
			c.log.Error("cannot close a removed mapping's ports in the firewall", "mapping", id, "err", err)
		}
	}
	c.mu.Lock()
	for _, p := range ports {
		if c.pool.Contains(p) && !c.holdsLocked(p) {
			c.pool.Release(p)
		}
	}
	free := c.pool.Free()
	c.mu.Unlock()
	c.log.Info("mapping removed", "mapping", id, "port1", m.rec.Port1, "port2", m.rec.Port2, "free_ports", free)
	c.noteRemoved(m.rec)
	return nil
}

// holdsLocked reports whether a mapping in the table uses port p. Caller
// holds c.mu.
func (c *Connector) holdsLocked(p uint16) bool {
	for _, m := range c.mappings {
		if m.rec.Port1 == p || m.rec.Port2 == p {
			return true
		}
	}
	return false
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

// listed is one mapping as `mapping list` shows it.
type listed struct {
	m    *mapping
	down [2]string
}

// listAll returns the mappings in store order with why their ports are
// not listening, if they are not.
func (c *Connector) listAll() []listed {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]listed, 0, len(c.order))
	for _, id := range c.order {
		l := listed{m: c.mappings[id]}
		if d := c.down[id]; d != nil {
			l.down = *d
		}
		out = append(out, l)
	}
	return out
}

func (c *Connector) stats() (mappings, free int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.mappings), c.pool.Free()
}

func orDefault[T cmp.Ordered](v, def T) T {
	var zero T
	if v <= zero {
		return def
	}
	return v
}

// DataConnRoom is how many data connections fit in an open-file limit:
// the rest is kept for the API, the listeners (one per pool port), the
// store and splice pipes (a sixteenth of the limit).
func DataConnRoom(openFiles uint64, poolPorts int) int64 {
	return max(1, int64(openFiles)-64-int64(openFiles/16)-int64(poolPorts))
}

// capConnections lowers relay.max_connections to what the process's
// open-file limit leaves after the reserve, so that a flood meets the
// Connector's own limit, not EMFILE, and the API and agents keep working.
func (c *Connector) capConnections(ports int) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur >= 1<<31 {
		return
	}
	if room := DataConnRoom(lim.Cur, ports); room < c.maxConns {
		c.log.Warn("relay.max_connections lowered to fit the open-file limit; raise the limit (LimitNOFILE=, ulimit -n) to hold more",
			"configured", c.maxConns, "in_effect", room, "open_file_limit", lim.Cur)
		c.maxConns = room
	}
}
