package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eclipse-iofog/iofog-connector/internal/testenv"
	"github.com/eclipse-iofog/iofog-connector/netcfg/firewall"
	"github.com/eclipse-iofog/iofog-connector/schema"
)

// newPortGate programs the firewall of the namespace it runs in, so the
// test runs it in a child process in a network namespace of its own: the
// host's firewall is never touched.
func TestPortGate(t *testing.T) {
	if os.Getenv("IOFOG_PORTGATE_NETNS") == "1" {
		portGateInOwnNamespace(t)
		return
	}
	testenv.RequireRoot(t, "creates a network namespace and programs nftables in it")
	cmd := exec.Command(os.Args[0], "-test.run=^TestPortGate$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "IOFOG_PORTGATE_NETNS=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in a new network namespace: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

func portGateInOwnNamespace(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	on := true
	cfg := &schema.Config{Broker: 61616, Dev: true, API: schema.API{HTTPPort: 8080, HTTPSPort: 443}}

	// Plain host, firewall not asked for: nothing.
	gate, undo, err := newPortGate(ctx, cfg, false, log)
	if err != nil || gate != nil {
		t.Fatalf("plain host, firewall unset: gate %v, err %v; want none", gate, err)
	}
	undo()
	if _, err := firewall.Attach(firewall.Options{}); !errors.Is(err, firewall.ErrNoTable) {
		t.Fatalf("a table exists though the firewall is off: %v", err)
	}

	// Plain host, firewall on: our accept-only table while we run, gone after.
	cfg.Firewall.Enabled = &on
	gate, undo, err = newPortGate(ctx, cfg, false, log)
	if err != nil || gate == nil {
		t.Fatalf("plain host, firewall on: %v", err)
	}
	if err := gate.OpenPorts(6000, 6001); err != nil {
		t.Fatal(err)
	}
	if err := gate.ClosePorts(6001); err != nil {
		t.Fatal(err)
	}
	if got := ports(t); !slices.Equal(got, []uint16{6000}) {
		t.Errorf("open ports = %v, want [6000]", got)
	}
	// The daemon finds the counters for /metrics this way.
	if _, ok := gate.(interface{ Collector() prometheus.Collector }); !ok {
		t.Error("gate has no Collector() for the metrics endpoint")
	}
	undo()
	if _, err := firewall.Attach(firewall.Options{}); !errors.Is(err, firewall.ErrNoTable) {
		t.Errorf("plain host: table left behind after exit: %v", err)
	}

	// Appliance child with no table from PID 1: it applies one, and leaves
	// it (and the open ports) in place when it exits, so a restart of the
	// Connector does not open or close the box.
	cfg.Firewall.Enabled = nil
	gate, undo, err = newPortGate(ctx, cfg, true, log)
	if err != nil || gate == nil {
		t.Fatalf("appliance: %v", err)
	}
	if err := gate.OpenPorts(7000); err != nil {
		t.Fatal(err)
	}
	undo()
	if got := ports(t); !slices.Equal(got, []uint16{7000}) {
		t.Errorf("after the child exits, open ports = %v, want [7000]", got)
	}
	// The restarted child attaches to the same table.
	gate, undo, err = newPortGate(ctx, cfg, true, log)
	if err != nil {
		t.Fatal(err)
	}
	defer undo()
	if err := gate.OpenPorts(7002); err != nil {
		t.Fatal(err)
	}
	if got := ports(t); !slices.Equal(got, []uint16{7000, 7002}) {
		t.Errorf("after restart, open ports = %v, want [7000 7002]", got)
	}
}

func ports(t *testing.T) []uint16 {
	t.Helper()
	fw, err := firewall.Attach(firewall.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	p, err := fw.Ports()
	if err != nil {
		t.Fatal(err)
	}
	return p
}
