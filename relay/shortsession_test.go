package relay_test

import (
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
)

// An agent connection answers short messages with plain reads and moves to
// splicing once it sends bulk data; in both, heartbeats are stripped and
// never reach the public client, and the bytes arrive whole and in order.
func TestAgentRepliesStayWholeFromMessagesToBulk(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4)})
	m := in.AddPublic(t, 60, 200000)
	agent := rawAgent(t, m.Port1, m.Passcode1)
	pub := dial(t, m.Port2)
	io.WriteString(pub, "ping")
	if got := readN(t, agent, 4); got != "ping" {
		t.Fatalf("agent read %q, want ping", got)
	}
	io.WriteString(agent, "BEATpong")
	if got := readN(t, pub, 4); got != "pong" {
		t.Fatalf("public client read %q, want pong (a leading BEAT was forwarded)", got)
	}
	bulk := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB, far past the small buffer
	go agent.Write(bulk)
	got := make([]byte, len(bulk))
	if _, err := io.ReadFull(pub, got); err != nil {
		t.Fatalf("reading the bulk reply: %v", err)
	}
	if !bytes.Equal(got, bulk) {
		t.Fatal("the bulk reply arrived changed")
	}
	io.WriteString(agent, "BEAT")
	io.WriteString(agent, "tail")
	if got := readN(t, pub, 4); got != "tail" {
		t.Fatalf("public client read %q after the bulk reply, want tail (a BEAT was forwarded)", got)
	}
}

// A client that shuts down its side still gets the whole reply and then a
// clean end of stream when the agent finishes: closing the session at once
// must not turn the end into a reset.
func TestClientHalfCloseThenAgentReplyAndClose(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4)})
	m := in.AddPublic(t, 60, 200000)
	agent := rawAgent(t, m.Port1, m.Passcode1)
	pub := dial(t, m.Port2)
	io.WriteString(pub, "request")
	if got := readN(t, agent, 7); got != "request" {
		t.Fatalf("agent read %q, want request", got)
	}
	if err := pub.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := agent.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("agent read %d bytes, %v after the client's half-close, want EOF", n, err)
	}
	io.WriteString(agent, "reply")
	agent.Close()
	all, err := io.ReadAll(pub)
	if err != nil {
		t.Fatalf("public client: %v after %q, want a clean end of stream", err, all)
	}
	if string(all) != "reply" {
		t.Fatalf("public client read %q, want reply", all)
	}
}
