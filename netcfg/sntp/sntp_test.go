package sntp_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/netcfg/sntp"
)

// server is a real SNTP server on loopback whose clock runs skew ahead of
// ours. mangle, when set, edits each reply before it is sent; decoy, when
// set, sends a reply with the wrong originate timestamp first.
type server struct {
	skew   time.Duration
	mangle func([]byte)
	decoy  bool
}

func (s server) start(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, peer, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			rx := time.Now().Add(s.skew)
			if n < 48 {
				continue
			}
			reply := make([]byte, 48)
			reply[0] = 0<<6 | 4<<3 | 4
			reply[1] = 2
			copy(reply[12:16], "TEST")
			copy(reply[24:32], buf[40:48])
			binary.BigEndian.PutUint64(reply[32:40], sntp.NTPTime(rx))
			if s.decoy {
				d := append([]byte(nil), reply...)
				d[24] ^= 0xff
				binary.BigEndian.PutUint64(d[40:48], sntp.NTPTime(rx.Add(time.Hour)))
				pc.WriteTo(d, peer)
			}
			if s.mangle != nil {
				s.mangle(reply)
			}
			binary.BigEndian.PutUint64(reply[40:48], sntp.NTPTime(time.Now().Add(s.skew)))
			pc.WriteTo(reply, peer)
		}
	}()
	return pc.LocalAddr().String()
}

func TestOffsetOfAServerAhead(t *testing.T) {
	for _, skew := range []time.Duration{97*time.Minute + 13*time.Second, -3 * time.Second, 0} {
		addr := server{skew: skew, decoy: true}.start(t)
		r, err := sntp.Query(context.Background(), addr, sntp.Options{})
		if err != nil {
			t.Fatal(err)
		}
		// The measurement cannot be better than half the round trip, and
		// NTP timestamps are exact to well under a microsecond.
		bound := r.RTT/2 + time.Microsecond
		if d := (r.Offset - skew).Abs(); d > bound {
			t.Errorf("skew %v: offset %v, off by %v, more than RTT/2 (%v)", skew, r.Offset, d, bound)
		}
		if r.Stratum != 2 || r.Server != addr {
			t.Errorf("response = %+v", r)
		}
	}
}

func TestRefusesBadReplies(t *testing.T) {
	for name, s := range map[string]server{
		"kiss of death":  {mangle: func(b []byte) { b[1] = 0; copy(b[12:16], "RATE") }},
		"unsynchronized": {mangle: func(b []byte) { b[0] |= 3 << 6 }},
		"client mode":    {mangle: func(b []byte) { b[0] = b[0]&^7 | 3 }},
		"no receive ts":  {mangle: func(b []byte) { clear(b[32:40]) }},
	} {
		addr := s.start(t)
		_, err := sntp.Query(context.Background(), addr, sntp.Options{Timeout: 10 * time.Second})
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
		var kiss *sntp.KissError
		if name == "kiss of death" && (!errors.As(err, &kiss) || kiss.Code != "RATE") {
			t.Errorf("kiss of death: err = %v, want KissError RATE", err)
		}
	}
}

func TestNoAnswerTimesOut(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0") // reads nothing, answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := sntp.Query(ctx, pc.LocalAddr().String(), sntp.Options{}); err == nil {
		t.Error("query with a cancelled context succeeded")
	}
}

func TestEra1Timestamps(t *testing.T) {
	// After 2036-02-07 the 32-bit NTP seconds wrap; the round trip must hold.
	for _, when := range []time.Time{
		time.Date(2026, 11, 25, 17, 0, 0, 123456789, time.UTC),
		time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		nonce := []byte{1, 2, 3, 4, 5, 6, 7, 8}
		b := make([]byte, 48)
		b[0], b[1] = 4<<3|4, 1
		copy(b[24:32], nonce)
		binary.BigEndian.PutUint64(b[32:40], sntp.NTPTime(when))
		binary.BigEndian.PutUint64(b[40:48], sntp.NTPTime(when))
		r, err := sntp.Parse(b, nonce, when, when)
		if err != nil {
			t.Fatal(err)
		}
		if d := r.Time.Sub(when).Abs(); d > time.Microsecond {
			t.Errorf("%v decoded as %v", when, r.Time)
		}
	}
}

func FuzzParse(f *testing.F) {
	nonce := []byte{9, 8, 7, 6, 5, 4, 3, 2}
	good := make([]byte, 48)
	good[0], good[1] = 4<<3|4, 2
	copy(good[24:32], nonce)
	binary.BigEndian.PutUint64(good[32:40], sntp.NTPTime(time.Now()))
	binary.BigEndian.PutUint64(good[40:48], sntp.NTPTime(time.Now()))
	f.Add(good)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		sent := time.Now()
		received := sent.Add(5 * time.Millisecond)
		r, err := sntp.Parse(b, nonce, sent, received)
		if err != nil {
			return
		}
		if r.RTT < 0 || r.RTT > 5*time.Millisecond {
			t.Fatalf("RTT %v outside [0, measured round trip]", r.RTT)
		}
		if r.Stratum == 0 || r.Stratum > 15 {
			t.Fatalf("accepted stratum %d", r.Stratum)
		}
	})
}
