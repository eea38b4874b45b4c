package relay

import (
	"context"
	"log/slog"
	"net"
	"time"
)

// Helpers that keep a short public session cheap: what a session does not
// need is neither formatted, allocated nor sent to the kernel.

// lazyAddr logs a connection's remote address, formatting it only when a
// line is actually written: most sessions log nothing.
type lazyAddr struct{ c net.Conn }

func (l lazyAddr) LogValue() slog.Value { return slog.StringValue(l.c.RemoteAddr().String()) }

func (l lazyAddr) String() string { return l.c.RemoteAddr().String() }

// debugOn reports whether debug lines are written, so that the hot path
// builds their attributes only then.
func (m *mapping) debugOn() bool {
	return m.log.Enabled(context.Background(), slog.LevelDebug)
}

// passcodeBytes is port i's passcode as bytes, converted once per mapping
// instead of once per agent connection.
func (m *mapping) passcodeBytes(i int) []byte {
	return m.passcodes[i]
}

// passOnEOF passes a half-close on to c, the peer of the direction that just
// ended, unless the other direction has ended too: then the session closes
// c at once and the close sends the same FIN, one system call fewer.
func (s *session) passOnEOF(c net.Conn) {
	if s.halves.Load() == 0 {
		closeWrite(c)
	}
}

// setWaitDeadline bounds a new data connection's first read (the passcode,
// a public client's first bytes). Over TLS the handshake writes too, so the
// deadline covers writes as well; a plain connection writes nothing that
// could block before it is settled (AUTHORIZED fits any empty send buffer).
func (m *mapping) setWaitDeadline(c net.Conn, d time.Time) {
	if m.c.dataTLS != nil {
		c.SetDeadline(d)
		return
	}
	c.SetReadDeadline(d)
}
