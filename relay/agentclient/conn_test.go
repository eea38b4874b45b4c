package agentclient_test

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/agentclient"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
)

const passcode = "0123456789abcdef0123456789abcdef0123"

// fakeConnector accepts one connection, answers AUTHORIZED to the right
// passcode, then hands the connection to serve.
func fakeConnector(t *testing.T, serve func(net.Conn)) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b := make([]byte, 36)
		if _, err := io.ReadFull(c, b); err != nil || string(b) != passcode {
			return
		}
		io.WriteString(c, "AUTHORIZED")
		serve(c)
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestConnBeatsAndStripsEchoes(t *testing.T) {
	got := make(chan string, 1)
	port := fakeConnector(t, func(c net.Conn) {
		b := make([]byte, 4)
		io.ReadFull(c, b) // the client's first heartbeat
		io.WriteString(c, "BEAT")
		time.Sleep(50 * time.Millisecond) // keep the echo and the payload in separate reads
		io.WriteString(c, "payload")
		got <- string(b)
		io.Copy(io.Discard, c)
	})
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	conn, err := agentclient.Dial(ctx, agentclient.Config{Mode: "private", Host: "127.0.0.1", Port: port, Passcode: passcode,
		HeartbeatFrequency: 50, HeartbeatAbsenceThreshold: 60000, DevMode: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(hangGuard))
	b := make([]byte, 64)
	n, err := conn.Read(b)
	if err != nil || string(b[:n]) != "payload" {
		t.Fatalf("Read: %q, %v; want the payload without the BEAT echo", b[:n], err)
	}
	if s := <-got; s != "BEAT" {
		t.Errorf("connector got %q from the client, want BEAT", s)
	}
	if conn.Echoes() != 1 {
		t.Errorf("echoes %d, want 1", conn.Echoes())
	}
}

func TestConnClosesAfterSilence(t *testing.T) {
	port := fakeConnector(t, func(c net.Conn) { io.Copy(io.Discard, c) }) // never answers a BEAT
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	conn, err := agentclient.Dial(ctx, agentclient.Config{Mode: "private", Host: "127.0.0.1", Port: port, Passcode: passcode,
		HeartbeatFrequency: 50, HeartbeatAbsenceThreshold: 200, DevMode: true})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-conn.Done():
	case <-ctx.Done():
		t.Fatal("connection to a silent connector still open")
	}
	_, err = conn.Read(make([]byte, 8))
	if err == nil || !strings.Contains(err.Error(), "heard nothing") {
		t.Errorf("Read after the timeout: %v, want the reason", err)
	}
}

func TestConnStaysUpWhileTheConnectorEchoes(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4)})
	m := in.AddPrivate(t, 60000)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	conn, err := agentclient.Dial(ctx, agentclient.Config{Mode: "private", Host: "127.0.0.1", Port: m.Port1, Passcode: m.Passcode1,
		HeartbeatFrequency: 20, HeartbeatAbsenceThreshold: 300, DevMode: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go io.Copy(io.Discard, conn) // reading is what notices the echoes
	for conn.Echoes() < 20 {
		select {
		case <-conn.Done():
			t.Fatalf("connection closed after %d echoes although the Connector answers every BEAT", conn.Echoes())
		case <-ctx.Done():
			t.Fatal("no echoes")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestParseConfigNamesTheBadField(t *testing.T) {
	for js, field := range map[string]string{
		`{"mode":"mirror","host":"h","port":1,"passcode":"` + passcode + `","devmode":true}`:     "mode",
		`{"mode":"public","host":"","port":1,"passcode":"` + passcode + `","devmode":true}`:      "host",
		`{"mode":"public","host":"h","port":70000,"passcode":"` + passcode + `","devmode":true}`: "port",
		`{"mode":"public","host":"h","port":1,"passcode":"short","devmode":true}`:                "passcode",
		`{"mode":"public","host":"h","port":1,"passcode":"` + passcode + `","devmode":false}`:    "cert",
	} {
		_, err := agentclient.ParseConfig([]byte(js))
		if err == nil || !strings.Contains(err.Error(), "field "+field) {
			t.Errorf("%s: %v, want an error naming field %s", js, err, field)
		}
	}
	// The Controller's own config, as captured.
	if _, err := agentclient.ParseConfig([]byte(`{"mode":"public","host":"127.0.0.1","port":6000,"passcode":"` + passcode + `","connectioncount":60,"localhost":"iofog","localport":8888,"heartbeatfrequency":20000,"heartbeatabsencethreshold":60000,"devmode":true}`)); err != nil {
		t.Errorf("captured config: %v", err)
	}
}
