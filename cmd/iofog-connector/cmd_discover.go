package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"text/tabwriter"
	"time"

	"github.com/eclipse-iofog/iofog-connector/netcfg/discovery"
	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/schema"
)

// announce starts the daemon's mDNS announcement once the Connector's API
// is up, unless the config turns discovery off. It stops with ctx.
func announce(ctx context.Context, cfg *schema.Config, c *relay.Connector, version string, log *slog.Logger) {
	if !cfg.Discovery.Enabled {
		log.Debug("LAN discovery is off in the config")
		return
	}
	go func() {
		select {
		case <-c.Ready():
		case <-ctx.Done():
			return
		}
		port := 0
		if a, ok := c.APIAddr().(*net.TCPAddr); ok {
			port = a.Port
		}
		log.Info("announcing the Connector on the LAN", "service", discovery.Service, "api_port", port)
		err := discovery.Announce(ctx, discovery.Announcement{Host: cfg.Hostname, Port: port, Dev: cfg.Dev, Version: version})
		if err != nil {
			log.Warn("cannot announce the Connector on the LAN; agents must be given its address", "err", err)
		}
	}()
}

func cmdDiscover(ctx context.Context, env *cliEnv, args []string) int {
	fs := newFlagSet(env, "discover", "discover [--timeout 3s] [--iface NAME]")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to listen for answers")
	ifname := fs.String("iface", "", "ask on this interface only (default: the one the multicast route picks)")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if fs.NArg() > 0 || *timeout <= 0 {
		fmt.Fprintln(env.stderr, "iofog-connector discover: takes no arguments and a positive --timeout")
		return 2
	}
	var ifc *net.Interface
	if *ifname != "" {
		var err error
		if ifc, err = net.InterfaceByName(*ifname); err != nil {
			fmt.Fprintf(env.stderr, "iofog-connector discover: --iface: %v\n", err)
			return 2
		}
	}
	found, err := discovery.Browse(ctx, *timeout, ifc)
	if err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector discover: %v\n", err)
		return 1
	}
	if len(found) == 0 {
		fmt.Fprintf(env.stderr, "no Connector answered within %s (is one running with discovery on, on this LAN?)\n", *timeout)
		return 1
	}
	w := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tHOST\tADDRESS\tAPI\tMODE\tVERSION")
	for _, c := range found {
		mode, scheme := "tls", "https"
		if c.Dev {
			mode, scheme = "dev", "http"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s://%s\t%s\t%s\n", c.Instance, c.Host, c.Addr(), scheme,
			net.JoinHostPort(c.Addr().String(), fmt.Sprint(c.Port)), mode, c.Version)
	}
	w.Flush()
	return 0
}
