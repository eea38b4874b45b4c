// Package sntp asks an NTP server what time it is (SNTPv4, RFC 4330) and
// works out how far our clock is off. It only measures; setting the clock is
// the caller's business (package netcfg does it with an injected setter, so
// tests never touch the host's clock).
//
// Each request carries a random transmit timestamp that the server must echo
// as the originate timestamp, so a reply that is spoofed, stale or meant for
// another request is refused.
package sntp

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/vishvananda/netns"

	"github.com/eclipse-iofog/iofog-connector/netcfg/internal/nsutil"
)

// Port is the NTP port.
const Port = "123"

const packetLen = 48

// ntpEpochOffset is the seconds from 1900-01-01 (NTP era 0) to 1970-01-01.
const ntpEpochOffset = 2208988800

// Response is one measurement.
type Response struct {
	Server  string
	Offset  time.Duration // add to our clock to get the server's
	RTT     time.Duration // round trip, less the server's own processing
	Stratum uint8
	Time    time.Time // the server's transmit time
}

// KissError is a kiss-of-death reply (stratum 0): the server tells us to go
// away (DENY, RSTR) or slow down (RATE).
type KissError struct{ Code string }

func (e *KissError) Error() string { return "sntp: server sent kiss-of-death " + e.Code }

// Options tune Query.
type Options struct {
	// NetNS is the namespace to send from; 0 means ours (tests use it).
	NetNS netns.NsHandle
	// Timeout bounds one query when ctx has no earlier deadline. Default 5s.
	Timeout time.Duration
}

// Query sends one request to server ("host" or "host:port") and measures.
func Query(ctx context.Context, server string, o Options) (*Response, error) {
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	addr := server
	if _, _, err := net.SplitHostPort(server); err != nil {
		addr = net.JoinHostPort(server, Port)
	}
	var conn net.Conn
	err := nsutil.Do(o.NetNS, func() (err error) {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "udp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sntp %s: %w", server, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()

	req := make([]byte, packetLen)
	req[0] = 0<<6 | 4<<3 | 3 // no leap warning, version 4, mode 3 (client)
	nonce := make([]byte, 8)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("sntp: random nonce: %w", err)
	}
	copy(req[40:48], nonce)

	sent := time.Now()
	if _, err := conn.Write(req); err != nil {
		return nil, fmt.Errorf("sntp %s: send: %w", server, err)
	}
	buf := make([]byte, 512)
	for {
		n, err := conn.Read(buf)
		received := time.Now()
		if err != nil {
			return nil, fmt.Errorf("sntp %s: no answer: %w", server, err)
		}
		r, err := Parse(buf[:n], nonce, sent, received)
		if errors.Is(err, errNotOurs) {
			continue // a stray or replayed datagram; keep waiting
		}
		if err != nil {
			return nil, fmt.Errorf("sntp %s: %w", server, err)
		}
		r.Server = server
		return r, nil
	}
}

var errNotOurs = errors.New("reply does not answer our request")

// Parse checks a server reply to the request that carried nonce as its
// transmit timestamp, sent at sent and answered at received (local clock,
// monotonic readings included), and computes the offset.
func Parse(b, nonce []byte, sent, received time.Time) (*Response, error) {
	if len(b) < packetLen {
		return nil, fmt.Errorf("short reply (%d bytes)", len(b))
	}
	if len(nonce) != 8 || string(b[24:32]) != string(nonce) {
		return nil, errNotOurs
	}
	li, vn, mode := b[0]>>6, b[0]>>3&7, b[0]&7
	if mode != 4 {
		return nil, fmt.Errorf("reply has mode %d, want 4 (server)", mode)
	}
	if vn < 1 || vn > 4 {
		return nil, fmt.Errorf("reply has version %d", vn)
	}
	stratum := b[1]
	if stratum == 0 {
		return nil, &KissError{Code: printable(b[12:16])}
	}
	if li == 3 || stratum > 15 {
		return nil, fmt.Errorf("server is not synchronized (leap %d, stratum %d)", li, stratum)
	}
	rx, tx := binary.BigEndian.Uint64(b[32:40]), binary.BigEndian.Uint64(b[40:48])
	if rx == 0 || tx == 0 {
		return nil, errors.New("reply has no receive or transmit timestamp")
	}
	t2, t3 := ntpTime(rx), ntpTime(tx)
	// The server's receive and transmit times must be in order; a reply
	// that says otherwise cannot be used to measure anything.
	if t3.Before(t2) {
		return nil, errors.New("server transmit time is before its receive time")
	}
	// Local times on the wall clock, but the interval from the monotonic
	// clock, so a clock step during the query cannot skew the result.
	t1 := sent.Round(0)
	t4 := t1.Add(received.Sub(sent))
	offset := (t2.Sub(t1) + t3.Sub(t4)) / 2
	rtt := max(t4.Sub(t1)-t3.Sub(t2), 0)
	return &Response{Offset: offset, RTT: rtt, Stratum: stratum, Time: t3}, nil
}

// ntpTime converts a 64-bit NTP timestamp. Era 0 ends in 2036; a timestamp
// with the top bit clear is read as era 1 (RFC 4330 section 3).
func ntpTime(ts uint64) time.Time {
	sec := int64(ts >> 32)
	if sec&0x80000000 == 0 {
		sec += 1 << 32
	}
	frac := ts & 0xffffffff
	nsec := int64((frac * 1e9) >> 32)
	return time.Unix(sec-ntpEpochOffset, nsec).UTC()
}

// NTPTime encodes t as an NTP timestamp (for servers in tests).
func NTPTime(t time.Time) uint64 {
	sec := uint64(t.Unix()+ntpEpochOffset) & 0xffffffff
	frac := (uint64(t.Nanosecond()) << 32) / 1e9
	return sec<<32 | frac
}

func printable(b []byte) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c >= 0x20 && c < 0x7f {
			out = append(out, c)
		}
	}
	return string(out)
}
