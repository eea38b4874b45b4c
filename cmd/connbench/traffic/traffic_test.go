package traffic_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/cmd/connbench/splice"
	"github.com/eclipse-iofog/iofog-connector/cmd/connbench/traffic"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on loopback: %v", err)
	}
	return ln
}

// The benchmark's figures are only meaningful if its reference relay
// delivers every byte both ways and passes closes on; a short transfer
// through a real relay on loopback checks both ends and the relay at once.
func TestThroughSpliceRelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	far := traffic.NewFar()
	farLn := listen(t)
	go far.Listen(ctx, farLn)
	relayLn := listen(t)
	relayDone := make(chan error, 1)
	go func() { relayDone <- splice.Serve(ctx, relayLn, farLn.Addr().String()) }()
	through := traffic.TCP(relayLn.Addr().String())

	push, err := far.Push(ctx, through, 50*time.Millisecond)
	if err != nil {
		t.Fatalf("push through the relay: %v", err)
	}
	if push.Sent == 0 || push.Bytes != push.Sent {
		t.Errorf("push: far end received %d bytes, client sent %d", push.Bytes, push.Sent)
	}
	if push.Rate() <= 0 {
		t.Errorf("push: rate %v from %d bytes", push.Rate(), push.Bytes)
	}

	pull, err := traffic.Pull(ctx, through, 50*time.Millisecond)
	if err != nil {
		t.Fatalf("pull through the relay (the far end's close must reach the client): %v", err)
	}
	if pull.Bytes == 0 {
		t.Error("pull: client received nothing")
	}

	s := traffic.Setup(ctx, through, 2, 100*time.Millisecond)
	if s.OK == 0 || s.Failed != 0 {
		t.Errorf("setup: %d sessions ok, %d failed (last: %v)", s.OK, s.Failed, s.LastErr)
	}

	cancel()
	if err := <-relayDone; err != nil {
		t.Errorf("relay did not stop cleanly: %v", err)
	}
}

// A relay that loses the far end's reply must show up as failed sessions,
// not as a fast rate.
func TestSetupCountsFailures(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ln := listen(t)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close() // accepts, then drops the session without echoing
		}
	}()
	defer ln.Close()
	s := traffic.Setup(ctx, traffic.TCP(ln.Addr().String()), 1, 50*time.Millisecond)
	if s.OK != 0 || s.Failed == 0 || s.LastErr == nil {
		t.Errorf("setup against a dropping server: %d ok, %d failed, last error %v; want only failures", s.OK, s.Failed, s.LastErr)
	}
}
