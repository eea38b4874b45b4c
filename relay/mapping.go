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
	// over TLS the write of AUTHORIZED (on a plain connection those 10
	// bytes go into an empty send buffer and cannot block).
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
	// than to move through splice's pipe (two extra system calls). A public
	// client's first bytes are read into a buffer of this size.
	smallCopy = 16 << 10
	// spliceChunk is the most moved by one splice, so that the write
	// deadline is re-armed at least this often while a slow peer reads.
	spliceChunk = 1 << 20
	// pairAttempts is how many agent connections a public client's first
	// bytes are offered to when each turns out dead before answering.
	pairAttempts = 3
)

// mapping is one port pair and everything connected to it. All pairing
// state lives here, so mappings never disturb each other (§6.1).
type mapping struct {
	c      *Connector
	rec    Record
	public bool
	log    *slog.Logger
	gate   *logGate

	// passcodes are the ports' passcodes as bytes, for comparing.
	passcodes [2][]byte

	mu       sync.Mutex
	ln       [2]net.Listener // nil while a port could not be opened
	closed   bool
	closeWhy string
	done     chan struct{}
	conns    map[net.Conn]struct{} // every accepted connection, to close on remove
	nauth    [2]int                // authenticated agent connections per port
	pend     [2]list.List          // *pending per port: agent ports: not authenticated yet; public port: silent
	idle     list.List             // public: *agentConn ready to pair
	waiters  list.List             // public: *waiter, clients waiting for an agent
	priv     [2]atomic.Pointer[agentConn]
	wg       sync.WaitGroup
	sessions atomic.Int64 // public sessions in progress
	tally    tally        // per-mapping totals (view.go)
}

// pending is a connection that a stranger can hold without proving
// anything: on an agent port before the right passcode, on a public port
// before its first bytes. These are what the limits bound.
type pending struct {
	conn  net.Conn
	elem  *list.Element // in m.pend; guarded by m.mu; nil once out
	spoke atomic.Bool   // its first bytes (public) or whole passcode (agent) arrived
	gone  atomic.Bool   // no longer counted against relay.max_connections
}

// uncount takes the connection out of the overall count, once: at once
// when it is closed to make room, so a flood's churn does not hold slots
// until each closed connection's goroutine has run.
func (p *pending) uncount(c *Connector) {
	if p.gone.CompareAndSwap(false, true) {
		c.nconns.Add(-1)
	}
}

func newMapping(c *Connector, rec Record) *mapping {
	m := &mapping{
		c: c, rec: rec, public: rec.Public(), done: make(chan struct{}),
		conns:     map[net.Conn]struct{}{},
		log:       c.log.With("mapping", rec.ID),
		passcodes: [2][]byte{[]byte(rec.PasscodePort1), []byte(rec.PasscodePort2)},
	}
	m.gate = newLogGate(m.log, c.logEvery)
	return m
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
	m.gate.close()
}

// enter admits an accepted connection under the limits (relay.max_*):
// overall, then per port. A full port makes room by closing its oldest
// pending connection (the one that has had the longest to prove itself);
// a public port whose unpaired clients have all sent bytes and wait for an
// agent connection refuses the newcomer instead. closed reports that the
// mapping is gone.
func (m *mapping) enter(conn net.Conn, i int) (p *pending, closed bool) {
	c := m.c
	if c.nconns.Add(1) > c.maxConns {
		c.nconns.Add(-1)
		c.met.refused[limConnections].Inc()
		m.gate.emit(evLimit, slog.LevelWarn, "connection refused: the Connector holds relay.max_connections data connections",
			"port", m.port(i), "remote", conn.RemoteAddr().String(), "limit", c.maxConns)
		return nil, false
	}
	lim, limit, what := limUnauthenticated, c.maxUnauth, "relay.max_unauthenticated connections that have not authenticated"
	if m.public && i == 1 {
		lim, limit, what = limWaiting, c.maxWaiting, "relay.max_waiting unpaired public clients"
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		c.nconns.Add(-1)
		return nil, true
	}
	var victim *pending
	if n := m.pend[i].Len() + m.unpairedLocked(i); n >= limit {
		if e := m.evictableLocked(i); e != nil {
			victim = m.pend[i].Remove(e).(*pending)
			victim.elem = nil
		} else {
			m.mu.Unlock()
			c.nconns.Add(-1)
			c.met.refused[lim].Inc()
			m.gate.emit(evLimit, slog.LevelWarn, "connection refused: the port holds "+what,
				"port", m.port(i), "remote", conn.RemoteAddr().String(), "limit", limit)
			return nil, false
		}
	}
	p = &pending{conn: conn}
	p.elem = m.pend[i].PushBack(p)
	m.conns[conn] = struct{}{}
	m.wg.Add(1)
	m.mu.Unlock()
	if victim != nil {
		victim.conn.Close()
		victim.uncount(c)
		c.met.evicted[lim].Inc()
		m.gate.emit(evLimit, slog.LevelWarn, "oldest pending connection closed to make room: the port holds "+what,
			"port", m.port(i), "remote", victim.conn.RemoteAddr().String(), "limit", limit)
	}
	return p, false
}

// evictCandidates is how many of the oldest pending connections are looked
// at for one that has sent nothing the Connector has not read yet.
const evictCandidates = 16

// evictableLocked picks the oldest pending connection with nothing queued:
// one whose bytes are waiting in the kernel has spoken and is only waiting
// for its goroutine, as a legitimate client under a flood does. nil when
// the oldest few have all spoken.
func (m *mapping) evictableLocked(i int) *list.Element {
	e := m.pend[i].Front()
	for k := 0; e != nil && k < evictCandidates; k, e = k+1, e.Next() {
		if p := e.Value.(*pending); !p.spoke.Load() && !hasQueued(p.conn) {
			return e
		}
	}
	return nil // every candidate has spoken: refuse the newcomer instead
}

// unpairedLocked counts the public clients that sent bytes and wait for an
// agent connection: they count against relay.max_waiting too.
func (m *mapping) unpairedLocked(i int) int {
	if m.public && i == 1 {
		return m.waiters.Len()
	}
	return 0
}

// settleLocked takes a connection out of its port's pending list: it has
// authenticated, or sent its first bytes.
func (m *mapping) settleLocked(p *pending, i int) {
	if p.elem != nil {
		m.pend[i].Remove(p.elem)
		p.elem = nil
	}
}

func (m *mapping) untrack(conn net.Conn, p *pending, i int) {
	m.mu.Lock()
	m.settleLocked(p, i)
	if m.conns != nil {
		delete(m.conns, conn)
	}
	m.mu.Unlock()
	conn.Close()
	p.uncount(m.c)
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
			m.gate.emit(evAcceptFailed, slog.LevelWarn, "accept failed; retrying", "port", m.port(i), "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
				continue
			case <-m.done:
				return
			}
		}
		delay = 0
		p, closed := m.enter(conn, i)
		if p == nil {
			conn.Close()
			if closed {
				return
			}
			continue
		}
		go m.serveConn(conn, i, p)
	}
}

func (m *mapping) serveConn(raw net.Conn, i int, p *pending) {
	defer m.untrack(raw, p, i)
	conn := raw
	if m.c.dataTLS != nil {
		conn = tls.Server(raw, m.c.dataTLS)
	}
	if m.public && i == 1 {
		m.servePublic(conn, p)
		return
	}
	m.serveAgent(conn, i, p)
}

// agentConn is one authenticated agent connection.
type agentConn struct {
	m         *mapping
	side      int // 0: port1, 1: port2
	conn      net.Conn
	remote    lazyAddr
	threshold time.Duration
	released  atomic.Bool // no longer counted against maxconnections

	// wmu keeps payload writes and BEAT echoes whole and apart.
	wmu         sync.Mutex
	wdl         int64        // write deadline in force, unix nanos; guarded by wmu
	lastPayload atomic.Int64 // unix nanos of the last payload write into conn

	sess atomic.Pointer[session] // public: set while paired

	elem *list.Element // in m.idle while pooled; guarded by m.mu
}

// Session states. A session is fresh while the agent connection has been
// given only the client's first bytes and has not answered: if it dies
// then, the client and those bytes go to another agent connection.
const (
	sessLive int32 = iota
	sessFresh
	sessRetry
)

// session is a public client paired with one agent connection.
type session struct {
	pub    net.Conn
	agent  *agentConn
	start  time.Time
	state  atomic.Int32
	halves atomic.Int32   // directions that ended with a half-close
	sent   atomic.Bool    // the first bytes were written to the agent connection
	ended  sync.WaitGroup // done once the session is closed or abandoned
	once   sync.Once
	pubWDL int64 // write deadline in force on pub; only the agent's read loop writes to pub
}

// close ends the session: the agent connection stops counting against
// maxconnections before it is closed, so an agent that redials on seeing
// the close is never refused as full.
func (s *session) close() {
	s.once.Do(func() {
		s.agent.release()
		s.agent.conn.Close()
		s.pub.Close()
		s.ended.Done()
	})
}

// commit marks the session as past the point where it could move to
// another agent connection; false if it already has to move.
func (s *session) commit() bool {
	st := s.state.Load()
	if st == sessLive {
		return true
	}
	return st == sessFresh && s.state.CompareAndSwap(sessFresh, sessLive) || s.state.Load() == sessLive
}

// abandon gives up a fresh session's dead agent connection and wakes the
// public client's goroutine to pair again; false if the session is past
// that point.
func (s *session) abandon() bool {
	if !s.state.CompareAndSwap(sessFresh, sessRetry) {
		return false
	}
	s.once.Do(func() {
		s.agent.release()
		s.agent.conn.Close()
		s.ended.Done()
	})
	// Counted before the client is woken: once it has been served by the
	// next agent connection, /metrics shows the move.
	s.agent.m.c.met.retries.Inc()
	s.pub.SetReadDeadline(time.Now())
	return true
}

// halfClosed records that one direction ended with a half-close and closes
// the session when it is the second; otherwise it waits for the session
// to end (the other direction finishing, an error, or a move).
func (s *session) halfClosed() {
	if s.halves.Add(1) == 2 {
		s.close()
		return
	}
	s.ended.Wait()
}

// armPub keeps a write deadline on the public client (relay.write_timeout);
// it moves only when a sixteenth of the timeout has passed, so a busy
// stream does not pay a timer update per write.
func (s *session) armPub(now time.Time, d time.Duration) {
	armWrite(s.pub, &s.pubWDL, now, d)
}

func armWrite(c net.Conn, dl *int64, now time.Time, d time.Duration) {
	n := now.UnixNano()
	if *dl-n < int64(d-d/16) {
		*dl = n + int64(d)
		c.SetWriteDeadline(time.Unix(0, *dl))
	}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

func (m *mapping) serveAgent(conn net.Conn, side int, p *pending) {
	remote := lazyAddr{conn}
	port := m.port(side)
	m.setWaitDeadline(conn, time.Now().Add(authTimeout))
	// Only the passcode until it is right: a stranger holds no read buffer.
	var got [PasscodeLen]byte
	n, err := io.ReadFull(conn, got[:])
	if err == nil {
		p.spoke.Store(true) // a whole passcode: not one to close to make room
	}
	if err != nil {
		m.c.met.authFailures.Inc()
		m.gate.emit(evAuthFailed, slog.LevelWarn, "agent authentication failed", "port", port, "remote", remote,
			"reason", fmt.Sprintf("sent %d of %d passcode bytes, then %s", n, PasscodeLen, describeErr(err)))
		m.noteRefused(port, remote.String(), "agent authentication failed: short or late passcode")
		return
	}
	if subtle.ConstantTimeCompare(got[:], m.passcodeBytes(side)) != 1 {
		m.c.met.authFailures.Inc()
		m.gate.emit(evAuthFailed, slog.LevelWarn, "agent authentication failed", "port", port, "remote", remote, "reason", "wrong passcode")
		m.noteRefused(port, remote.String(), "agent authentication failed: wrong passcode")
		return
	}
	a := &agentConn{m: m, side: side, conn: conn, remote: remote, threshold: m.threshold(side)}
	if !m.admit(a, p) {
		m.c.met.rejectedFull.Inc()
		m.gate.emit(evAgentFull, slog.LevelWarn, "agent connection refused: mapping already holds maxconnections authenticated connections",
			"port", port, "remote", remote, "max", m.rec.MaxConnectionsPort1)
		m.noteRefused(port, remote.String(), "agent refused: the mapping already holds maxconnections")
		return
	}
	// The read loop's buffer sends AUTHORIZED first.
	buf := make([]byte, smallBuf)
	// Register before answering, holding the write lock so that no payload
	// can overtake AUTHORIZED: the agent may be sent bytes the moment it
	// has read it.
	a.wmu.Lock()
	if !m.ready(a) {
		a.wmu.Unlock()
		a.release()
		return
	}
	_, err = conn.Write(buf[:copy(buf, authorizedMsg)])
	a.wmu.Unlock()
	if a.threshold == 0 {
		// Otherwise the read loop sets the heartbeat deadline first thing.
		conn.SetReadDeadline(time.Time{})
	}
	if err != nil {
		a.end(err)
		m.gate.emit(evAuthorizedLost, slog.LevelWarn, "agent authenticated but AUTHORIZED could not be sent", "port", port, "remote", remote, "err", err)
		return
	}
	if m.debugOn() {
		m.log.Debug("agent authenticated", "port", port, "remote", remote)
	}
	m.agentSeen(time.Now())
	err = a.readLoop(buf)
	why := a.closeReason(err)
	a.end(err)
	if m.debugOn() {
		m.log.Debug("agent connection closed", "port", port, "remote", remote, "reason", why)
	}
}

// release stops counting the connection against maxconnections, once.
func (a *agentConn) release() {
	if a.released.CompareAndSwap(false, true) {
		a.m.leave(a)
	}
}

// end finishes an agent connection whose read loop stopped with err.
func (a *agentConn) end(err error) {
	s := a.retire()
	if s == nil {
		a.release()
		return
	}
	if s.state.Load() == sessRetry {
		a.release()
		return
	}
	if s.state.Load() == sessFresh && a.diedUnread(s, err) && s.abandon() {
		// Dead before it answered: the public client's goroutine pairs
		// its first bytes with another agent connection.
		return
	}
	if errors.Is(err, io.EOF) {
		// The agent shut down its side: its slot is free now (it may
		// redial at once); the public client learns the same and may
		// still send until it shuts down too.
		a.release()
		s.passOnEOF(s.pub)
		s.halfClosed()
		return
	}
	s.close()
}

// retire takes the connection out of the idle pool and returns its
// session: one paired up to this moment is handled by the caller, and none
// can be paired after it.
func (a *agentConn) retire() *session {
	m := a.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if a.elem != nil {
		m.idle.Remove(a.elem)
		a.elem = nil
	}
	return a.sess.Load()
}

// diedUnread tells whether the agent connection ended without taking the
// client's first bytes: reset (the agent's kernel answers bytes nobody will
// read with a reset), or closed before they were sent. An agent that read
// them and closed normally (a service with no reply) is not given them
// twice.
func (a *agentConn) diedUnread(s *session, err error) bool {
	switch {
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return true
	case errors.Is(err, io.EOF):
		return !s.sent.Load() || resetFollows(a.conn)
	}
	return false
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
func (m *mapping) admit(a *agentConn, p *pending) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settleLocked(p, a.side)
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
			m.gate.emit(evPrivateReplaced, slog.LevelInfo, "private route: newer agent connection replaces the previous one",
				"port", m.port(a.side), "remote", a.remote, "previous", old.remote)
			old.conn.Close()
		}
		return true
	}
	if e := m.waiters.Front(); e != nil {
		w := m.waiters.Remove(e).(*waiter)
		w.elem = nil
		m.pairLocked(a, w.pub, w.replay)
		m.mu.Unlock()
		w.ch <- a
		return true
	}
	a.elem = m.idle.PushBack(a)
	m.mu.Unlock()
	return true
}

func (m *mapping) pairLocked(a *agentConn, pub net.Conn, replay bool) {
	s := &session{pub: pub, agent: a, start: time.Now()}
	if replay {
		s.state.Store(sessFresh)
	}
	s.ended.Add(1)
	a.sess.Store(s)
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

// errMoved ends a read loop or a copy whose session moved to another agent
// connection.
var errMoved = errors.New("session moved to another agent connection")

// errBytesLost: the agent connection died while client bytes that could
// not be kept were in flight, so the session cannot move.
var errBytesLost = errors.New("agent connection died while the public client was sending")

// readLoop reads from the agent until the connection ends: answers BEAT,
// forwards payload, and enforces the heartbeat absence threshold (§6.3).
func (a *agentConn) readLoop(buf []byte) error {
	var big *[]byte
	defer func() {
		if big != nil {
			a.m.c.bufs.Put(big)
		}
	}()
	var deadlineSet time.Time
	var pk *peeker
	// bulk: a read filled the small buffer, so the agent sends more than
	// messages and its bytes are worth splicing. Until then plain reads
	// (one system call each) serve short sessions best.
	bulk := false
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
		if pub, s := a.splicePeer(); pub != nil && bulk {
			// Bulk data to a public client: wait for the agent's bytes and
			// learn how many are queued. A chunk larger than any heartbeat
			// that does not start with one is payload and goes socket to
			// socket; a small one is read below and checked for BEAT, as a
			// read would see it (§6.6).
			if pk == nil {
				var err error
				if pk, err = newPeeker(a.conn.(*net.TCPConn)); err != nil {
					return err
				}
			}
			avail, beat, err := pk.queued()
			if err != nil {
				if a.keepAlive(err) {
					deadlineSet = time.Time{}
					continue
				}
				return err
			}
			if avail > len(buf) && !beat {
				if !s.commit() {
					return errMoved
				}
				if err := a.spliceOut(s, pub, avail); err != nil {
					return err
				}
				continue
			}
		}
		n, err := a.conn.Read(buf)
		if n > 0 {
			data := buf[:n]
			if lead, trail := edgeBeats(data); lead+trail > 0 {
				// Heartbeats, alone or glued to payload: the agent's BEAT
				// is a write of its own, which can arrive in one read with
				// the payload written just before or after it.
				a.echo()
				data = data[lead : len(data)-trail]
				if len(data) > 0 {
					a.m.c.met.beatsInPayload.Inc()
				}
			}
			if len(data) > 0 {
				if ferr := a.forward(data); ferr != nil {
					return ferr
				}
			}
		}
		if err != nil {
			if n == 0 && a.keepAlive(err) {
				deadlineSet = time.Time{}
				continue
			}
			return err
		}
		// A read that fills the small buffer means bulk data is flowing:
		// splice it from now on or, where it cannot be spliced (TLS,
		// private route), switch to a big buffer for the rest of the
		// connection. Sessions of small messages never take one.
		bulk = bulk || n == len(buf)
		if big == nil && n == len(buf) && a.busy() {
			if pub, _ := a.splicePeer(); pub == nil {
				big = a.m.c.bufs.Get().(*[]byte)
				buf = *big
			}
		}
	}
}

// keepAlive: the heartbeat deadline passed, but the connection is paired
// and its peer wrote payload into it within the threshold. Traffic in
// either direction keeps a paired connection alive, so an upload the agent
// only reads is not cut.
func (a *agentConn) keepAlive(err error) bool {
	return a.threshold > 0 && errors.Is(err, os.ErrDeadlineExceeded) && a.busy() &&
		time.Since(time.Unix(0, a.lastPayload.Load())) < a.threshold
}

// spliceOut moves avail queued agent bytes to the public client, in
// chunks so that the write deadline moves while a slow client reads.
func (a *agentConn) spliceOut(s *session, pub *net.TCPConn, avail int) error {
	for avail > 0 {
		k := min(avail, spliceChunk)
		s.armPub(time.Now(), a.m.c.writeWait)
		n, err := io.CopyN(pub, a.conn.(*net.TCPConn), int64(k))
		a.m.countFromAgent(int64(n))
		if err != nil {
			a.m.writeFailed(err, "public client", pub)
			return fmt.Errorf("relaying to the public client: %w", err)
		}
		avail -= k
	}
	return nil
}

// writeFailed counts and logs a write that passed relay.write_timeout.
func (m *mapping) writeFailed(err error, who string, c net.Conn) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		m.c.met.writeTimeouts.Inc()
		m.gate.emit(evWriteTimeout, slog.LevelInfo, who+" stopped reading for longer than relay.write_timeout; closing its session",
			"remote", c.RemoteAddr().String(), "write_timeout", m.c.writeWait)
	}
}

// splicePeer is the public client's TCP connection and the session when
// this agent connection is paired and both are plain TCP, so bytes can be
// spliced.
func (a *agentConn) splicePeer() (*net.TCPConn, *session) {
	if !canSplice || !a.m.public {
		return nil, nil
	}
	s := a.sess.Load()
	if s == nil {
		return nil, nil
	}
	pub, ok := s.pub.(*net.TCPConn)
	if !ok {
		return nil, nil
	}
	if _, ok := a.conn.(*net.TCPConn); !ok {
		return nil, nil
	}
	return pub, s
}

// edgeBeats is how many bytes of whole BEATs a chunk starts and ends with:
// a heartbeat, several that TCP merged, or heartbeats merged with the
// payload the agent wrote just before or after them. The rest is payload.
// A chunk of nothing but BEATs is all lead.
func edgeBeats(b []byte) (lead, trail int) {
	for len(b)-lead >= len(beatMsg) && string(b[lead:lead+len(beatMsg)]) == beatMsg {
		lead += len(beatMsg)
	}
	for e := len(b) - trail; e-lead >= len(beatMsg) && string(b[e-len(beatMsg):e]) == beatMsg; e = len(b) - trail {
		trail += len(beatMsg)
	}
	return lead, trail
}

// closeReason says why the agent's read loop ended, for the log, and counts
// heartbeat timeouts.
func (a *agentConn) closeReason(err error) string {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		a.m.c.met.beatTimeouts.Inc()
		a.m.gate.emit(evBeatTimeout, slog.LevelInfo, "agent connection silent for longer than its heartbeat absence threshold; closing",
			"port", a.m.port(a.side), "remote", a.remote, "threshold", a.threshold)
		a.m.noteTimeout(a.m.port(a.side), a.remote.String())
		return "heartbeat absence threshold passed"
	case errors.Is(err, errMoved):
		return err.Error()
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
		if !s.commit() {
			return errMoved
		}
		s.armPub(time.Now(), a.m.c.writeWait)
		n, err := s.pub.Write(b)
		a.m.countFromAgent(int64(n))
		if err != nil {
			a.m.writeFailed(err, "public client", s.pub)
			return fmt.Errorf("public client write failed: %w", err)
		}
		return nil
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
		a.m.writeFailed(err, "private route agent", o.conn)
		o.conn.Close()
	}
	return nil
}

// armWrite keeps the write deadline of the agent connection; caller holds
// wmu.
func (a *agentConn) armWrite(now time.Time) {
	armWrite(a.conn, &a.wdl, now, a.m.c.writeWait)
}

func (a *agentConn) writePayload(b []byte) (int, error) {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	a.armWrite(time.Now())
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
	a.armWrite(time.Now())
	io.WriteString(a.conn, beatMsg)
}

// waiter is a public client waiting for a free agent connection.
type waiter struct {
	pub    net.Conn
	replay bool
	ch     chan *agentConn
	elem   *list.Element // in m.waiters; guarded by m.mu
}

// servePublic pairs a public client with a free agent connection once it
// has sent its first bytes, waiting up to relay.public_wait in all from
// its arrival (§6.5). A client that sends nothing holds no agent
// connection, over TLS too; one that sends nothing within the wait is
// closed.
func (m *mapping) servePublic(pub net.Conn, p *pending) {
	remote := lazyAddr{pub}
	deadline := time.Now().Add(m.c.publicWait)
	m.setWaitDeadline(pub, deadline)
	// Wait for the first bytes without a buffer, so that silent clients
	// hold none (over TLS, the handshake comes first). The peeker serves
	// the splice loop too: one per client.
	var err error
	var pk *peeker
	if tcp, ok := pub.(*net.TCPConn); ok && canSplice {
		if pk, err = newPeeker(tcp); err == nil {
			if _, _, err = pk.queued(); err == nil {
				// Bytes are queued: from here the client is not one to
				// close to make room, though they are not read yet.
				p.spoke.Store(true)
			}
		}
	} else if tc, ok := pub.(*tls.Conn); ok {
		err = tc.Handshake()
	}
	// The first bytes stay in user space until the agent answers, so that
	// they can go to another agent connection if this one turns out dead.
	var bp, keep *[]byte
	defer func() {
		if keep != nil {
			m.c.smallBufs.Put(keep)
		}
	}()
	n := 0
	if err == nil {
		bp = m.c.smallBufs.Get().(*[]byte)
		keep = bp
		n, err = pub.Read(*bp)
	}
	if n == 0 {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			m.c.met.silentTimeouts.Inc()
			m.gate.emit(evSilentTimeout, slog.LevelInfo, "public client closed: it sent nothing within relay.public_wait",
				"remote", remote, "waited", m.c.publicWait)
		} else if m.debugOn() {
			m.log.Debug("public client left before sending anything", "remote", remote, "reason", describeErr(err))
		}
		return
	}
	p.spoke.Store(true)
	first := (*bp)[:n]
	met := m.c.met
	for attempt := 1; ; attempt++ {
		a := m.takeAgent(pub, p, deadline, attempt < pairAttempts)
		if a == nil {
			return
		}
		if attempt == 1 {
			m.countSession()
			met.sessionsActive.Inc()
			m.sessions.Add(1)
			defer func() {
				met.sessionsActive.Dec()
				m.sessions.Add(-1)
			}()
		}
		// The wait is over; writes get relay.write_timeout from now on.
		pub.SetDeadline(time.Time{})
		s := a.sess.Load()
		if m.debugOn() {
			m.log.Debug("public client paired", "remote", remote, "agent", a.remote, "attempt", attempt)
		}
		err := m.relayPublic(a, s, pub, first, &keep, pk)
		if errors.Is(err, errMoved) {
			if m.debugOn() {
				m.log.Debug("agent connection died before answering; pairing the public client again", "remote", remote, "agent", a.remote)
			}
			deadline = time.Now().Add(m.c.publicWait)
			pub.SetReadDeadline(deadline)
			continue
		}
		why := "public client closed the connection"
		if err != nil && !errors.Is(err, io.EOF) {
			why = describeErr(err)
		}
		if m.debugOn() {
			m.log.Debug("public session closed", "remote", remote, "agent", a.remote, "reason", why,
				"duration", time.Since(s.start).Round(time.Millisecond))
		}
		return
	}
}

// relayPublic gives the agent connection the client's first bytes, relays
// the rest, and passes on a half-close. errMoved: the agent connection
// died before answering and the client must be paired again. pk is the
// client's peeker, nil if it has none yet.
func (m *mapping) relayPublic(a *agentConn, s *session, pub net.Conn, first []byte, keep **[]byte, pk *peeker) error {
	w, err := a.writePayload(first)
	s.sent.Store(true)
	m.countToAgent(int64(w))
	if err != nil {
		if s.abandon() {
			return errMoved
		}
		if s.state.Load() == sessRetry {
			return errMoved
		}
		m.writeFailed(err, "agent", a.conn)
		s.close()
		return err
	}
	err = a.copyFrom(pub, s, keep, pk)
	switch {
	case errors.Is(err, errMoved):
		return err
	case errors.Is(err, io.EOF):
		// The client shut down its side (or left): pass it on and keep
		// relaying the reply. The slot is released first, so the agent
		// can redial at once when it sees the end.
		a.release()
		a.wmu.Lock()
		s.passOnEOF(a.conn)
		a.wmu.Unlock()
		s.halfClosed()
		if s.state.Load() == sessRetry {
			return errMoved
		}
		return io.EOF
	}
	if s.state.Load() == sessRetry && !errors.Is(err, errBytesLost) {
		return errMoved
	}
	s.close()
	return err
}

// takeAgent pairs pub with an idle agent connection, waiting for one until
// deadline. replay: the session may move to another agent connection if
// this one dies before answering.
func (m *mapping) takeAgent(pub net.Conn, p *pending, deadline time.Time, replay bool) *agentConn {
	m.mu.Lock()
	m.settleLocked(p, 1)
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	// Newest first: the connection most recently proven alive.
	if e := m.idle.Back(); e != nil {
		a := m.idle.Remove(e).(*agentConn)
		a.elem = nil
		m.pairLocked(a, pub, replay)
		m.mu.Unlock()
		return a
	}
	w := &waiter{pub: pub, replay: replay, ch: make(chan *agentConn, 1)}
	w.elem = m.waiters.PushBack(w)
	m.mu.Unlock()

	t := time.NewTimer(time.Until(deadline))
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
		m.gate.emit(evWaitTimeout, slog.LevelInfo, "public client closed: no agent connection came free in time",
			"remote", pub.RemoteAddr().String(), "waited", m.c.publicWait)
		m.noteRefused(m.rec.Port2, pub.RemoteAddr().String(), "public client closed: no agent connection came free in time")
	}
	return nil
}

// copyFrom relays public client bytes into the agent connection after the
// first ones. keep is the buffer holding those, returned to its pool once
// the session can no longer move; pk is src's peeker or nil.
func (a *agentConn) copyFrom(src net.Conn, s *session, keep **[]byte, pk *peeker) error {
	if st, ok := src.(*net.TCPConn); ok {
		if dt, ok := a.conn.(*net.TCPConn); ok {
			return a.spliceFrom(st, dt, s, keep, pk)
		}
	}
	return a.copyBuffered(src, s, keep)
}

// settled is called before more client bytes are consumed: false when the
// session has to move instead; otherwise the first bytes' buffer is given
// back.
func (a *agentConn) settled(s *session, keep **[]byte) bool {
	if !s.commit() {
		return false
	}
	if *keep != nil {
		a.m.c.smallBufs.Put(*keep)
		*keep = nil
	}
	return true
}

// copyBuffered is copyFrom through user space, for TLS connections.
func (a *agentConn) copyBuffered(src net.Conn, s *session, keep **[]byte) error {
	bp := a.m.c.bufs.Get().(*[]byte)
	defer a.m.c.bufs.Put(bp)
	buf := *bp
	for {
		n, err := src.Read(buf)
		if s.state.Load() == sessRetry {
			// Woken to move; bytes read meanwhile cannot follow.
			if n > 0 {
				return errBytesLost
			}
			return errMoved
		}
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			// A late wake-up meant for an earlier pairing (see spliceFrom).
			src.SetReadDeadline(time.Time{})
			continue
		}
		if n > 0 {
			if !a.settled(s, keep) {
				return errMoved
			}
			w, werr := a.writePayload(buf[:n])
			a.m.countToAgent(int64(w))
			if werr != nil {
				a.m.writeFailed(werr, "agent", a.conn)
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
