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
