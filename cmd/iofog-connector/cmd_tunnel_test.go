package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
)

func TestTunnelCommandUsage(t *testing.T) {
	t.Setenv("SELFNAME", "")
	dir := t.TempDir()
	bad := writeConfigFile(t, dir, "net.json", "{\"mode\":\"public\",\"host\":\"h\",\n\"port\":0}")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-h"}, 0, "--from-agent"},
		{nil, 2, "exactly one of --config FILE and --from-agent"},
		{[]string{"--config", bad, "--from-agent"}, 2, "exactly one"},
		{[]string{"--config", bad}, 1, "net.json:2: field port"},
		{[]string{"--config", dir + "/missing.json"}, 1, "missing.json"},
		{[]string{"--from-agent"}, 1, "SELFNAME"},
		{[]string{"--config", bad, "--log-level", "loud"}, 2, "--log-level"},
	} {
		code, _, stderr := runConfigCmd(t, cmdTunnel, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("tunnel %v: exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
}

// The subcommand end to end: a public mapping on a real Connector served by
// `tunnel --config`, and a clean exit when the context ends.
func TestTunnelCommandServesAPublicMapping(t *testing.T) {
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 2)})
	m := in.AddPublic(t, 2, 60000)
	svc, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	go func() {
		for {
			c, err := svc.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 5)
				io.ReadFull(c, b)
				c.Write([]byte("served " + string(b)))
			}()
		}
	}()
	cfg := writeConfigFile(t, t.TempDir(), "net.json", fmt.Sprintf(
		`{"mode":"public","host":"127.0.0.1","port":%d,"passcode":%q,"connectioncount":2,"localhost":"iofog","localport":%d,"heartbeatfrequency":20000,"heartbeatabsencethreshold":60000,"devmode":true}`,
		m.Port1, m.Passcode1, svc.Addr().(*net.TCPAddr).Port))
	ctx, cancel := context.WithCancel(context.Background())
	exited := make(chan int, 1)
	var stderr bytes.Buffer
	go func() {
		exited <- cmdTunnel(ctx, &cliEnv{stdout: io.Discard, stderr: &stderr}, []string{"--config", cfg})
	}()
	deadline := time.Now().Add(60 * time.Second)
	var got []byte
	for time.Now().Before(deadline) {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", m.Port2))
		if err == nil {
			c.SetDeadline(time.Now().Add(30 * time.Second))
			c.Write([]byte("hello"))
			got, _ = io.ReadAll(c)
			c.Close()
			if string(got) == "served hello" {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	if string(got) != "served hello" {
		t.Fatalf("public client got %q through the tunnel command", got)
	}
	select {
	case code := <-exited:
		if code != 0 {
			t.Errorf("tunnel exited %d after the stop signal", code)
		}
	case <-time.After(60 * time.Second):
		t.Error("tunnel did not exit after the stop signal")
	}
}

func TestDiscoverCommandUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-h"}, 0, "--timeout"},
		{[]string{"extra"}, 2, "takes no arguments"},
		{[]string{"--timeout", "0s"}, 2, "positive --timeout"},
		{[]string{"--iface", "no-such-if0"}, 2, "--iface"},
	} {
		code, _, stderr := runConfigCmd(t, cmdDiscover, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("discover %v: exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
}
