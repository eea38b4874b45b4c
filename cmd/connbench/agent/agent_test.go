package agent_test

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/cmd/connbench/agent"
	"github.com/eclipse-iofog/iofog-connector/cmd/connbench/traffic"
	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
)

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// The benchmark's thin agent must be accepted by the real Connector, carry
// a public session end to end, and its idle holders must count against the
// mapping's maxconnections exactly as agents do.
func TestAgainstRealConnector(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4)})

	pooled := in.AddPublic(t, 4, 200000)
	far := traffic.NewFar()
	pool := agent.StartPool(ctx, addr(pooled.Port1), pooled.Passcode1, 2, far.Serve)
	for pool.Authed() < 2 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	push, err := far.Push(ctx, traffic.TCP(addr(pooled.Port2)), 50*time.Millisecond)
	if err != nil {
		t.Fatalf("push through the Connector: %v", err)
	}
	if push.Sent == 0 || push.Bytes != push.Sent {
		t.Errorf("push through the Connector: far end got %d of %d bytes", push.Bytes, push.Sent)
	}
	pull, err := traffic.Pull(ctx, traffic.TCP(addr(pooled.Port2)), 50*time.Millisecond)
	if err != nil || pull.Bytes == 0 {
		t.Errorf("pull through the Connector: %d bytes, %v", pull.Bytes, err)
	}
	if s := traffic.Setup(ctx, traffic.TCP(addr(pooled.Port2)), 2, 100*time.Millisecond); s.OK == 0 || s.Failed != 0 {
		t.Errorf("sessions through the Connector: %d ok, %d failed (last: %v)", s.OK, s.Failed, s.LastErr)
	}

	idle := in.AddPublic(t, 5, 200000)
	sources := []net.IP{{127, 0, 0, 2}, {127, 0, 0, 3}}
	conns, err := agent.Hold(ctx, addr(idle.Port1), idle.Passcode1, 5, sources, 3)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if err != nil || len(conns) != 5 {
		t.Fatalf("holding 5 idle agent connections: %d held, %v", len(conns), err)
	}
	// A sixth is beyond maxconnections: the Connector must not authorize it.
	extra, err := agent.Hold(ctx, addr(idle.Port1), idle.Passcode1, 1, nil, 1)
	for _, c := range extra {
		c.Close()
	}
	if err == nil {
		t.Error("a sixth agent connection was authorized on a mapping with maxconnections 5")
	}
	if _, err := agent.Hold(ctx, addr(idle.Port1), "00000000-0000-0000-0000-000000000000", 1, nil, 1); err == nil {
		t.Error("a wrong passcode was authorized")
	}

	// The pool must let go of its connections when the run ends.
	cancel()
	done := make(chan struct{})
	go func() { pool.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Error("pool workers still running 30s after their context ended")
	}
}
