package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/eclipse-iofog/iofog-connector/netcfg/firewall"
	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/schema"
)

// newPortGate returns the firewall gate the config asks for, or nil when the
// firewall is off, and a function that undoes what it set up.
//
// On the appliance, PID 1 owns the table (it applies it once the network is
// up); the Connector, its child, only attaches and changes the mapping-port
// set, so a Connector restart never opens or closes the box. If the table is
// missing (PID 1 could not apply it, or a test runs the child alone) the
// child applies it, and still leaves it in place on exit.
//
// On a plain host the firewall is off unless the config turns it on; then
// the Connector applies an accept-only table for its ports and removes it on
// exit. The returned gate also has Collector() for the metrics endpoint.
func newPortGate(_ context.Context, cfg *schema.Config, appliance bool, log *slog.Logger) (relay.PortGate, func(), error) {
	noop := func() {}
	if !cfg.Firewall.On(appliance) {
		log.Info("firewall off", "appliance", appliance)
		return nil, noop, nil
	}
	rules := firewall.RulesFromConfig(cfg, appliance)
	if appliance {
		fw, err := firewall.Attach(firewall.Options{})
		if errors.Is(err, firewall.ErrNoTable) {
			log.Warn("firewall table missing; applying it", "table", firewall.DefaultTable)
			fw, err = firewall.Apply(rules, firewall.Options{})
		}
		if err != nil {
			// No table and none can be made: nftables does not work on
			// this kernel, so nothing is filtered either way. Refusing to
			// run would only add an unusable Connector; PID 1 reports the
			// firewall problem in STATUS.txt.
			log.Error("firewall unavailable; running without it", "err", err)
			return nil, noop, nil
		}
		log.Info("firewall attached", "table", fw.Table())
		// The table stays: it belongs to PID 1 and outlives this process.
		return fw, func() { fw.Close() }, nil
	}
	fw, err := firewall.Apply(rules, firewall.Options{})
	if err != nil {
		return nil, noop, fmt.Errorf("firewall: %w (turn it off with firewall: enabled: false if this host manages its own)", err)
	}
	log.Info("firewall table applied", "table", fw.Table(), "policy", rules.Policy)
	return fw, func() {
		if err := fw.Remove(); err != nil {
			log.Error("remove firewall table", "err", err)
		}
		fw.Close()
	}, nil
}
