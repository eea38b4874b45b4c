package relay_test

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
)

// FuzzAgentHandshake sends arbitrary first bytes to an agent port: the
// Connector answers AUTHORIZED exactly when they begin with the passcode,
// and otherwise closes without a byte.
func FuzzAgentHandshake(f *testing.F) {
	in := relaytest.Start(f, relay.Options{Config: relaytest.Config(f, 2), Logger: relaytest.Quiet()})
	m := in.AddPublic(f, 1<<20, 200000)
	f.Add([]byte(m.Passcode1))
	f.Add([]byte(m.Passcode1 + "BEAT"))
	f.Add([]byte(m.Passcode1[:35]))
	f.Add([]byte(strings.ToUpper(m.Passcode1)))
	f.Add([]byte("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"))
	f.Fuzz(func(t *testing.T, first []byte) {
		c, err := net.Dial("tcp", addr(m.Port1))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(hangGuard))
		c.Write(first)
		c.(*net.TCPConn).CloseWrite()
		reply, err := io.ReadAll(c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("no answer to %q", first)
		}
		ok := bytes.HasPrefix(first, []byte(m.Passcode1))
		if ok != bytes.HasPrefix(reply, []byte("AUTHORIZED")) || (!ok && len(reply) > 0) {
			t.Fatalf("sent %q, got %q", first, reply)
		}
	})
}

// FuzzPublicFirstBytes sends arbitrary first bytes to a public port and
// shuts down the write side: a pooled agent connection receives exactly
// those bytes and then the end of the stream, and its reply reaches the
// client. A client that sends nothing is closed without taking the agent.
func FuzzPublicFirstBytes(f *testing.F) {
	in := relaytest.Start(f, relay.Options{Config: relaytest.Config(f, 2), Logger: relaytest.Quiet()})
	m := in.AddPublic(f, 1<<20, 200000)
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte("BEAT"))
	f.Add([]byte("BEATBEAT"))
	f.Add([]byte(m.Passcode1))
	f.Add([]byte{})
	f.Add([]byte("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"))
	f.Add(bytes.Repeat([]byte{0}, 70000))
	f.Fuzz(func(t *testing.T, first []byte) {
		agent, err := net.Dial("tcp", addr(m.Port1))
		if err != nil {
			t.Fatal(err)
		}
		defer agent.Close()
		agent.SetDeadline(time.Now().Add(hangGuard))
		io.WriteString(agent, m.Passcode1)
		ok := make([]byte, 10)
		if _, err := io.ReadFull(agent, ok); err != nil {
			t.Fatalf("agent not authorized: %v", err)
		}
		pub, err := net.Dial("tcp", addr(m.Port2))
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Close()
		pub.SetDeadline(time.Now().Add(hangGuard))
		done := make(chan error, 1)
		go func() {
			_, err := pub.Write(first)
			pub.(*net.TCPConn).CloseWrite()
			done <- err
		}()
		if len(first) == 0 {
			if reply, err := io.ReadAll(pub); err != nil || len(reply) > 0 {
				t.Fatalf("client that sent nothing: got %q, %v; want closed", reply, err)
			}
			return
		}
		got, err := io.ReadAll(agent)
		if err != nil || !bytes.Equal(got, first) {
			t.Fatalf("agent got %d bytes (%v), want the %d sent", len(got), err, len(first))
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		io.WriteString(agent, "reply")
		agent.Close()
		if reply, err := io.ReadAll(pub); err != nil || string(reply) != "reply" {
			t.Fatalf("client got %q, %v; want the reply", reply, err)
		}
	})
}
