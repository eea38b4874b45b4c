package relay

import (
	"container/list"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Protocol constants (docs/protocol.md §4.2).
const (
	PasscodeLen   = 36
	beatMsg       = "BEAT"
	authorizedMsg = "AUTHORIZED"
)

const (
	// authTimeout bounds the TLS handshake plus the 36 passcode bytes, and
	// the write of AUTHORIZED.
	authTimeout = 10 * time.Second
	// beatQuiet: a BEAT is echoed only when no payload has been written to
	// that agent connection for this long (docs/protocol.md §6.6).
	beatQuiet = time.Second
	// smallBuf is an agent connection's first read buffer: big enough for
	// any BEAT and for small messages, small enough that 20,000 idle
	// connections stay cheap. A connection carrying bulk data switches to a
	// pooled bigBuf, which halves the CPU per byte against 64 KiB reads.
	smallBuf = 512
	bigBuf   = 256 << 10
	// smallCopy: a burst this small is cheaper to copy through user space
	// than to move through splice's pipe (two extra system calls).
	smallCopy = 16 << 10
)

// mapping is one port pair and everything connected to it. All pairing
// state lives here, so mappings never disturb each other (§6.1).
type mapping struct {
	c      *Connector
	rec    Record
	public bool
	log    *slog.Logger

	mu       sync.Mutex
	ln       [2]net.Listener // nil while a port could not be opened
	closed   bool
	closeWhy string
	done     chan struct{}
	conns    map[net.Conn]struct{} // every accepted connection, to close on remove
	nauth    [2]int                // authenticated agent connections per port
	idle     list.List             // public: *agentConn ready to pair
	waiters  list.List             // public: *waiter, clients waiting for an agent
	priv     [2]atomic.Pointer[agentConn]
	wg       sync.WaitGroup
	sessions atomic.Int64 // public sessions in progress
	tally    tally        // per-mapping totals (view.go)
}

func newMapping(c *Connector, rec Record) *mapping {
	return &mapping{
		c: c, rec: rec, public: rec.Public(), done: make(chan struct{}),
		conns: map[net.Conn]struct{}{},
		log:   c.log.With("mapping", rec.ID),
	}
}

func (m *mapping) port(i int) uint16 {
	if i == 0 {
		return m.rec.Port1
	}
	return m.rec.Port2
}

func (m *mapping) kind() string {
	if m.public {
		return "public"
	}
	return "private"
}

// serve starts accepting on whichever listeners are set.
func (m *mapping) serve() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, ln := range m.ln {
		if ln != nil && !m.closed {
			m.wg.Add(1)
			go m.acceptLoop(i, ln)
		}
	}
}

// setListener installs a listener opened later (after a port was busy at
// start-up) and starts accepting on it.
func (m *mapping) setListener(i int, ln net.Listener) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.ln[i] != nil {
		return false
	}
	m.ln[i] = ln
	m.wg.Add(1)
	go m.acceptLoop(i, ln)
	return true
}

func (m *mapping) active(i int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ln[i] != nil && !m.closed
}

// close closes both listeners and every connection of the mapping at once,
// then waits until nothing of it runs any more.
func (m *mapping) close(why string) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	m.closeWhy = why
	close(m.done)
	conns := m.conns
	m.conns = nil
	lns := m.ln
	m.mu.Unlock()
	for _, ln := range lns {
		if ln != nil {
			ln.Close()
		}
	}
	for conn := range conns {
		conn.Close()
	}
	m.wg.Wait()
}

func (m *mapping) track(conn net.Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.conns[conn] = struct{}{}
	m.wg.Add(1)
	return true
}

func (m *mapping) untrack(conn net.Conn) {
	m.mu.Lock()
	if m.conns != nil {
		delete(m.conns, conn)
	}
	m.mu.Unlock()
	conn.Close()
	m.wg.Done()
}

func (m *mapping) acceptLoop(i int, ln net.Listener) {
	defer m.wg.Done()
	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, keep serving
			// the connections we have.
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay < time.Second {
				delay *= 2
			}
			m.log.Warn("accept failed; retrying", "port", m.port(i), "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
				continue
			case <-m.done:
				return
			}
		}
		delay = 0
		if !m.track(conn) {
			conn.Close()
			return
		}
		go m.serveConn(conn, i)
	}
}

func (m *mapping) serveConn(raw net.Conn, i int) {
	defer m.untrack(raw)
	conn := raw
	if m.c.dataTLS != nil {
		conn = tls.Server(raw, m.c.dataTLS)
	}
	if m.public && i == 1 {
		m.servePublic(conn)
		return
	}
	m.serveAgent(conn, i)
}

// agentConn is one authenticated agent connection.
type agentConn struct {
	m         *mapping
	side      int // 0: port1, 1: port2
	conn      net.Conn
	remote    string
	threshold time.Duration

	// wmu keeps payload writes and BEAT echoes whole and apart.
	wmu         sync.Mutex
	lastPayload atomic.Int64 // unix nanos of the last payload write into conn

	sess atomic.Pointer[session] // public: set while paired

	elem *list.Element // in m.idle while pooled; guarded by m.mu
}

// session is a public client paired with one agent connection.
type session struct {
	pub   net.Conn
	agent *agentConn
	once  sync.Once
	start time.Time
}

func (s *session) close() {
	s.once.Do(func() {
		s.pub.Close()
		s.agent.conn.Close()
	})
}

func (m *mapping) serveAgent(conn net.Conn, side int) {
	remote := conn.RemoteAddr().String()
	port := m.port(side)
	want := m.rec.PasscodePort1
	if side == 1 {
		want = m.rec.PasscodePort2
	}
	conn.SetDeadline(time.Now().Add(authTimeout))
	var got [PasscodeLen]byte
	n, err := io.ReadFull(conn, got[:])
	if err != nil {
		m.c.met.authFailures.Inc()
		m.log.Warn("agent authentication failed", "port", port, "remote", remote,
			"reason", fmt.Sprintf("sent %d of %d passcode bytes, then %s", n, PasscodeLen, describeErr(err)))
		m.noteRefused(port, remote, "agent authentication failed: short or late passcode")
		return
	}
	if subtle.ConstantTimeCompare(got[:], []byte(want)) != 1 {
		m.c.met.authFailures.Inc()
		m.log.Warn("agent authentication failed", "port", port, "remote", remote, "reason", "wrong passcode")
		m.noteRefused(port, remote, "agent authentication failed: wrong passcode")
		return
	}
	a := &agentConn{m: m, side: side, conn: conn, remote: remote, threshold: m.threshold(side)}
	if !m.admit(a) {
		m.c.met.rejectedFull.Inc()
		m.log.Warn("agent connection refused: mapping already holds maxconnections authenticated connections",
			"port", port, "remote", remote, "max", m.rec.MaxConnectionsPort1)
		m.noteRefused(port, remote, "agent refused: the mapping already holds maxconnections")
		return
	}
	// Register before answering, holding the write lock so that no payload
	// can overtake AUTHORIZED: the agent may be sent bytes the moment it
	// has read it.
	a.wmu.Lock()
	if !m.ready(a) {
		a.wmu.Unlock()
		m.leave(a)
		return
	}
	_, err = io.WriteString(conn, authorizedMsg)
	a.wmu.Unlock()
	conn.SetDeadline(time.Time{})
	if err != nil {
		m.leave(a)
		if s := a.sess.Load(); s != nil {
			s.close()
		}
		m.log.Warn("agent authenticated but AUTHORIZED could not be sent", "port", port, "remote", remote, "err", err)
		return
	}
	m.log.Debug("agent authenticated", "port", port, "remote", remote)
	m.agentSeen(time.Now())
	why := a.readLoop()
	m.leave(a)
	if s := a.sess.Load(); s != nil {
		s.close()
	}
	m.log.Debug("agent connection closed", "port", port, "remote", remote, "reason", why)
}

func (m *mapping) threshold(side int) time.Duration {
	ms := m.rec.HeartbeatAbsenceThresholdPort1
	if side == 1 {
		ms = m.rec.HeartbeatAbsenceThresholdPort2
	}
	return time.Duration(ms) * time.Millisecond
}

// admit counts an authenticated connection against maxconnections (§6.2:
// only authenticated connections count). A private side holds one route:
// a newer connection replaces the older one, so an agent that reconnects
// after losing its link resumes at once.
func (m *mapping) admit(a *agentConn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	if m.public {
		if max := m.rec.MaxConnectionsPort1; max > 0 && m.nauth[0] >= max {
			return false
		}
	}
	m.nauth[a.side]++
	return true
}

// ready makes an authenticated connection available: to the first waiting
// public client, to the idle pool, or as the private route's side.
func (m *mapping) ready(a *agentConn) bool {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return false
	}
	if !m.public {
		m.mu.Unlock()
		if old := m.priv[a.side].Swap(a); old != nil {
			m.log.Info("private route: newer agent connection replaces the previous one",
				"port", m.port(a.side), "remote", a.remote, "previous", old.remote)
			old.conn.Close()
		}
		return true
	}
	if e := m.waiters.Front(); e != nil {
		w := m.waiters.Remove(e).(*waiter)
		w.elem = nil
		m.pairLocked(a, w.pub)
		m.mu.Unlock()
		w.ch <- a
		return true
	}
	a.elem = m.idle.PushBack(a)
	m.mu.Unlock()
	return true
}

func (m *mapping) pairLocked(a *agentConn, pub net.Conn) {
	a.sess.Store(&session{pub: pub, agent: a, start: time.Now()})
}

func (m *mapping) leave(a *agentConn) {
	m.mu.Lock()
	if a.elem != nil {
		m.idle.Remove(a.elem)
		a.elem = nil
	}
	m.nauth[a.side]--
	m.mu.Unlock()
	if !m.public {
		m.priv[a.side].CompareAndSwap(a, nil)
	}
}

// counts returns idle and paired agent connections.
func (m *mapping) counts() (idle, paired int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.public {
		idle = m.idle.Len()
		return idle, m.nauth[0] - idle
	}
	p1, p2 := m.priv[0].Load() != nil, m.priv[1].Load() != nil
	for _, present := range []bool{p1, p2} {
		if present && p1 && p2 {
			paired++
		} else if present {
			idle++
		}
	}
	return idle, paired
}

// readLoop reads from the agent until the connection ends: answers BEAT,
// forwards payload, and enforces the heartbeat absence threshold (§6.3).
func (a *agentConn) readLoop() string {
	buf := make([]byte, smallBuf)
	var big *[]byte
	defer func() {
		if big != nil {
			a.m.c.bufs.Put(big)
		}
	}()
	var deadlineSet time.Time
	var rc syscall.RawConn
	for {
		if a.threshold > 0 {
			// Moving the deadline on every read would cost a timer update
			// per read; moving it when 1/16 of the threshold has passed
			// closes a silent connection between 1 and 17/16 thresholds.
			if now := time.Now(); now.Sub(deadlineSet) > a.threshold/16 {
				a.conn.SetReadDeadline(now.Add(a.threshold + a.threshold/16))
				deadlineSet = now
				a.m.agentSeen(now)
			}
		}
		if pub := a.splicePeer(); pub != nil {
			// Bulk data to a public client: wait for the agent's bytes and
			// learn how many are queued. A chunk larger than any heartbeat
			// is payload and goes socket to socket; a small one is read
			// below and checked for BEAT, as a read would see it (§6.6).
			if rc == nil {
				var err error
				if rc, err = a.conn.(*net.TCPConn).SyscallConn(); err != nil {
					return describeErr(err)
				}
			}
			avail, err := queued(rc)
			if err != nil {
				return a.closeReason(err)
			}
			if avail > len(buf) {
				n, err := io.CopyN(pub, a.conn.(*net.TCPConn), int64(avail))
				a.m.countFromAgent(n)
				if err != nil {
					return "relaying to the public client failed: " + describeErr(err)
				}
				continue
			}
		}
		n, err := a.conn.Read(buf)
		if n > 0 {
			if isBeats(buf[:n]) {
				a.echo()
			} else if ferr := a.forward(buf[:n]); ferr != nil {
				return "public client write failed: " + describeErr(ferr)
			}
		}
		if err != nil {
			return a.closeReason(err)
		}
		// A read that fills the small buffer means bulk data is flowing and
		// cannot be spliced (TLS, private route): switch to a big buffer for
		// the rest of the connection. Sessions of small messages never take
		// one.
		if big == nil && n == len(buf) && a.busy() && a.splicePeer() == nil {
			big = a.m.c.bufs.Get().(*[]byte)
			buf = *big
		}
	}
}

// splicePeer is the public client's TCP connection when this agent
// connection is paired and both are plain TCP, so bytes can be spliced.
func (a *agentConn) splicePeer() *net.TCPConn {
	if !canSplice || !a.m.public {
		return nil
	}
	s := a.sess.Load()
	if s == nil {
		return nil
	}
	pub, ok := s.pub.(*net.TCPConn)
	if !ok {
		return nil
	}
	if _, ok := a.conn.(*net.TCPConn); !ok {
		return nil
	}
	return pub
}

// isBeats reports whether a chunk is one or more whole BEATs: a heartbeat,
// or several that TCP merged into one read. Anything else is payload.
func isBeats(b []byte) bool {
	if len(b) == 0 || len(b)%len(beatMsg) != 0 {
		return false
	}
	for i := 0; i < len(b); i += len(beatMsg) {
		if string(b[i:i+len(beatMsg)]) != beatMsg {
			return false
		}
	}
	return true
}

// closeReason says why the agent's read loop ended, for the log, and counts
// heartbeat timeouts.
func (a *agentConn) closeReason(err error) string {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		a.m.c.met.beatTimeouts.Inc()
		a.m.log.Info("agent connection silent for longer than its heartbeat absence threshold; closing",
			"port", a.m.port(a.side), "remote", a.remote, "threshold", a.threshold)
		a.m.noteTimeout(a.m.port(a.side), a.remote)
		return "heartbeat absence threshold passed"
	case errors.Is(err, io.EOF):
		return "agent closed the connection"
	case errors.Is(err, net.ErrClosed):
		a.m.mu.Lock()
		why := a.m.closeWhy
		a.m.mu.Unlock()
		if why != "" {
			return why
		}
		return "closed by the connector: its peer went away or it was replaced"
	}
	return describeErr(err)
}

func (a *agentConn) busy() bool {
	if a.m.public {
		return a.sess.Load() != nil
	}
	return a.m.priv[1-a.side].Load() != nil
}

// forward relays one chunk read from the agent to its peer.
func (a *agentConn) forward(b []byte) error {
	met := a.m.c.met
	if a.m.public {
		s := a.sess.Load()
		if s == nil {
			met.droppedUnpaired.Add(float64(len(b)))
			return nil
		}
		n, err := s.pub.Write(b)
		a.m.countFromAgent(int64(n))
		return err
	}
	o := a.m.priv[1-a.side].Load()
	if o == nil {
		met.droppedUnpaired.Add(float64(len(b)))
		return nil
	}
	a.m.countFromAgent(int64(len(b)))
	n, err := o.writePayload(b)
	a.m.countToAgent(int64(n))
	if err != nil {
		// The other side's link broke; it reconnects on its own and this
		// side carries on.
		o.conn.Close()
	}
	return nil
}

func (a *agentConn) writePayload(b []byte) (int, error) {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	n, err := a.conn.Write(b)
	a.lastPayload.Store(time.Now().UnixNano())
	return n, err
}

// echo answers a BEAT unless payload was written to this connection within
// beatQuiet or is being written now: payload already proves liveness, and an
// echo next to payload could merge with it in the agent's read (§6.6).
func (a *agentConn) echo() {
	if time.Since(time.Unix(0, a.lastPayload.Load())) < beatQuiet {
		return
	}
	if !a.wmu.TryLock() {
		return
	}
	defer a.wmu.Unlock()
	if time.Since(time.Unix(0, a.lastPayload.Load())) < beatQuiet {
		return
	}
	a.conn.SetWriteDeadline(time.Now().Add(authTimeout))
	io.WriteString(a.conn, beatMsg)
	a.conn.SetWriteDeadline(time.Time{})
}

// waiter is a public client waiting for a free agent connection.
type waiter struct {
	pub  net.Conn
	ch   chan *agentConn
	elem *list.Element // in m.waiters; guarded by m.mu
}

// servePublic pairs a public client with a free agent connection, waiting up
// to the configured time for one (§6.5). Nothing is read from the client
// while it waits, so its first bytes stay queued in the kernel, intact.
func (m *mapping) servePublic(pub net.Conn) {
	remote := pub.RemoteAddr().String()
	if tc, ok := pub.(*tls.Conn); ok {
		// Finish TLS before taking an agent connection, so a client that
		// never completes the handshake cannot hold one.
		tc.SetDeadline(time.Now().Add(authTimeout))
		if err := tc.Handshake(); err != nil {
			m.log.Debug("public client TLS handshake failed", "remote", remote, "err", err)
			return
		}
		tc.SetDeadline(time.Time{})
	}
	first := 0 // bytes known to be queued from the client
	if tcp, ok := pub.(*net.TCPConn); ok && canSplice {
		// Pair only once the client has sent something: the agent opens
		// its microservice connection on the first bytes anyway, and an
		// idle or half-open client then holds no agent connection. The
		// bytes stay queued for the agent.
		rc, err := tcp.SyscallConn()
		if err != nil {
			return
		}
		if first, err = queued(rc); err != nil {
			return
		}
	}
	a := m.takeAgent(pub)
	if a == nil {
		return
	}
	s := a.sess.Load()
	met := m.c.met
	m.countSession()
	met.sessionsActive.Inc()
	m.sessions.Add(1)
	m.log.Debug("public client paired", "remote", remote, "agent", a.remote)
	err := a.copyFrom(pub, first)
	s.close()
	met.sessionsActive.Dec()
	m.sessions.Add(-1)
	why := "public client closed the connection"
	if err != nil && !errors.Is(err, io.EOF) {
		why = describeErr(err)
	}
	m.log.Debug("public session closed", "remote", remote, "agent", a.remote, "reason", why,
		"duration", time.Since(s.start).Round(time.Millisecond))
}

func (m *mapping) takeAgent(pub net.Conn) *agentConn {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	// Newest first: the connection most recently proven alive.
	if e := m.idle.Back(); e != nil {
		a := m.idle.Remove(e).(*agentConn)
		a.elem = nil
		m.pairLocked(a, pub)
		m.mu.Unlock()
		return a
	}
	w := &waiter{pub: pub, ch: make(chan *agentConn, 1)}
	w.elem = m.waiters.PushBack(w)
	m.mu.Unlock()

	wait := m.c.publicWait
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case a := <-w.ch:
		return a
	case <-t.C:
	case <-m.done:
	}
	m.mu.Lock()
	if w.elem != nil {
		m.waiters.Remove(w.elem)
		w.elem = nil
	}
	closed := m.closed
	m.mu.Unlock()
	select {
	case a := <-w.ch:
		return a
	default:
	}
	if !closed {
		m.c.met.waitTimeouts.Inc()
		m.log.Info("public client closed: no agent connection came free in time",
			"remote", pub.RemoteAddr().String(), "waited", wait)
		m.noteRefused(m.rec.Port2, pub.RemoteAddr().String(), "public client closed: no agent connection came free in time")
	}
	return nil
}

// copyFrom relays public client bytes into the agent connection; first is
// how many are already known to be queued (0: unknown).
func (a *agentConn) copyFrom(src net.Conn, first int) error {
	if st, ok := src.(*net.TCPConn); ok {
		if dt, ok := a.conn.(*net.TCPConn); ok {
			return a.spliceFrom(st, dt, first)
		}
	}
	return a.copyBuffered(src)
}

// copyBuffered is copyFrom through user space, for TLS connections.
func (a *agentConn) copyBuffered(src net.Conn) error {
	bp := a.m.c.bufs.Get().(*[]byte)
	defer a.m.c.bufs.Put(bp)
	buf := *bp
	for {
		n, err := src.Read(buf)
		if n > 0 {
			w, werr := a.writePayload(buf[:n])
			a.m.countToAgent(int64(w))
			if werr != nil {
				return werr
			}
		}
		if err != nil {
			return err
		}
	}
}

func describeErr(err error) string {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timed out"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	}
	return err.Error()
}
