package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/eclipse-iofog/iofog-connector/controlapi"
	"github.com/eclipse-iofog/iofog-connector/relay/certs"
)

// The CLI's commands that talk to a running daemon through its control API:
// status, stop and mapping.

// client returns an API client for the daemon the flags point at, or
// reports why there is none on stderr.
func (f *configFlags) client(env *cliEnv) (*controlapi.Client, bool) {
	c, err := newAPIClient(*f)
	if err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector: %v\n", err)
		return nil, false
	}
	return c, true
}

// newAPIClient reaches a running daemon the way the original's CLI did: at
// the config's address and API port, HTTP in dev mode, else HTTPS trusting
// the local certificate file.
func newAPIClient(cf configFlags) (*controlapi.Client, error) {
	// Like the original's CLI, reach a daemon that runs on the shipped
	// defaults (make run, a fresh install) even when no settings file is
	// at the standard place; an explicit --config must exist.
	if cf.config == defaultConfigFile {
		if _, err := os.Stat(defaultConfigFile); errors.Is(err, fs.ErrNotExist) {
			cf.builtin = true
		}
	}
	cfg, err := cf.load()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	host := cfg.Address
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1" // "0.0.0.0" in some installers' files means this host
	}
	addr := net.JoinHostPort(host, strconv.Itoa(cfg.API.Port(cfg.Dev)))
	hc := &http.Client{Timeout: 30 * time.Second}
	if cfg.Dev {
		return controlapi.New("http://"+addr, hc), nil
	}
	certFile := filepath.Join(cf.tlsDir, certs.CertFile)
	pemData, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("read the Connector's certificate to trust: %w", err)
	}
	block, _ := pem.Decode(pemData)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM certificate", certFile)
	}
	// The certificate names the Connector's public domain, not the
	// address used here, so pin the exact local certificate instead of
	// checking names.
	want := block.Bytes
	hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !bytes.Equal(raw[0], want) {
				return fmt.Errorf("the daemon's certificate is not %s", certFile)
			}
			return nil
		},
	}}
	return controlapi.New("https://"+addr, hc), nil
}

func clientFlags(env *cliEnv, name, usage string) (*flag.FlagSet, *configFlags) {
	var cf configFlags
	fs := newFlagSet(env, name, usage)
	cf.register(fs)
	return fs, &cf
}

func cmdStatus(ctx context.Context, env *cliEnv, args []string) int {
	fs, cf := clientFlags(env, "status", "status [--config FILE | --builtin-config] [--tls-dir DIR]")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	c, ok := cf.client(env)
	if !ok {
		return 1
	}
	if _, err := c.Command(ctx, "status"); err != nil {
		fmt.Fprintln(env.stdout, "iofog-connector is stopped.")
		fmt.Fprintf(env.stderr, "(%s: %v)\n", c.Base, err)
		return 3 // LSB: program is not running
	}
	fmt.Fprintln(env.stdout, "iofog-connector is up and running.")
	return 0
}

func cmdStop(ctx context.Context, env *cliEnv, args []string) int {
	fs, cf := clientFlags(env, "stop", "stop [--config FILE | --builtin-config] [--tls-dir DIR]")
	wait := fs.Duration("wait", 15*time.Second, "how long to wait for the daemon to finish stopping")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	c, ok := cf.client(env)
	if !ok {
		return 1
	}
	if _, err := c.Command(ctx, "stop"); err != nil {
		var ae *controlapi.Error
		if errors.As(err, &ae) {
			fmt.Fprintf(env.stderr, "iofog-connector: %v\n", err)
			return 1
		}
		fmt.Fprintln(env.stdout, "iofog-connector is stopped.")
		return 0
	}
	// The daemon answers before it shuts down; wait until it is gone.
	c.HTTP.Timeout = 2 * time.Second
	deadline := time.Now().Add(*wait)
	for time.Now().Before(deadline) {
		if _, err := c.Command(ctx, "status"); err != nil {
			fmt.Fprintln(env.stdout, "iofog-connector is stopped.")
			return 0
		}
		select {
		case <-ctx.Done():
			return 1
		case <-time.After(200 * time.Millisecond):
		}
	}
	fmt.Fprintf(env.stderr, "iofog-connector: asked to stop, but still answering after %s\n", *wait)
	return 1
}

func cmdMapping(ctx context.Context, env *cliEnv, args []string) int {
	const usage = "mapping add --type public|private [--max N] [--threshold MS] | mapping remove ID | mapping list"
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(env.stderr, "Usage: iofog-connector "+usage)
		fmt.Fprintln(env.stderr, "Each subcommand also takes --config FILE | --builtin-config and --tls-dir DIR to find the daemon.")
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	sub, rest := args[0], args[1:]
	switch sub {
	case "add":
		return mappingAdd(ctx, env, rest)
	case "remove", "rm":
		return mappingRemove(ctx, env, rest)
	case "list", "ls":
		return mappingList(ctx, env, rest)
	}
	fmt.Fprintf(env.stderr, "iofog-connector mapping: unknown subcommand %q\nUsage: iofog-connector %s\n", sub, usage)
	return 2
}

func mappingAdd(ctx context.Context, env *cliEnv, args []string) int {
	fs, cf := clientFlags(env, "mapping add", "mapping add --type public|private [--max N] [--threshold MS]")
	typ := fs.String("type", "", "public (a public port for a microservice) or private (a route between two agents)")
	max := fs.Int("max", 0, "agent connections held per port (default: 60 public, 1 private, as the Controller asks)")
	threshold := fs.Int("threshold", 200000, "heartbeat absence threshold in milliseconds")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	var req controlapi.AddRequest
	switch *typ {
	case "public":
		if *max == 0 {
			*max = 60
		}
		req = controlapi.Public(*max, int64(*threshold))
	case "private":
		if *max == 0 {
			*max = 1
		}
		req = controlapi.Private(*max, int64(*threshold))
	default:
		fmt.Fprintln(env.stderr, "iofog-connector mapping add: --type must be public or private")
		return 2
	}
	c, ok := cf.client(env)
	if !ok {
		return 1
	}
	r, err := c.Add(ctx, req)
	if err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector: mapping add: %v\n", err)
		return 1
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "id\t%s\n", r.ID)
	if *typ == "public" {
		fmt.Fprintf(tw, "port1\t%d\t(agents connect here with passcode1)\n", r.Port1)
		fmt.Fprintf(tw, "port2\t%d\t(public port)\n", r.Port2)
		fmt.Fprintf(tw, "passcode1\t%s\n", r.Passcode1)
	} else {
		fmt.Fprintf(tw, "port1\t%d\t(first agent, passcode1)\n", r.Port1)
		fmt.Fprintf(tw, "port2\t%d\t(second agent, passcode2)\n", r.Port2)
		fmt.Fprintf(tw, "passcode1\t%s\n", r.Passcode1)
		fmt.Fprintf(tw, "passcode2\t%s\n", r.Passcode2)
	}
	tw.Flush()
	return 0
}

func mappingRemove(ctx context.Context, env *cliEnv, args []string) int {
	fs, cf := clientFlags(env, "mapping remove", "mapping remove [flags] ID")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(env.stderr, "Usage: iofog-connector mapping remove [flags] ID")
		return 2
	}
	c, ok := cf.client(env)
	if !ok {
		return 1
	}
	if _, err := c.Remove(ctx, fs.Arg(0)); err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector: mapping remove: %v\n", err)
		return 1
	}
	fmt.Fprintf(env.stdout, "removed %s\n", fs.Arg(0))
	return 0
}

func mappingList(ctx context.Context, env *cliEnv, args []string) int {
	fs, cf := clientFlags(env, "mapping list", "mapping list [--config FILE | --builtin-config] [--tls-dir DIR]")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	c, ok := cf.client(env)
	if !ok {
		return 1
	}
	r, err := c.List(ctx)
	if err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector: mapping list: %v\n", err)
		return 1
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTYPE\tPORT1\tPORT2\tMAX\tAGENTS IDLE\tAGENTS PAIRED\tSESSIONS\tLISTENING")
	for _, m := range r.Mappings {
		listening := "both"
		switch {
		case !m.Active1 && !m.Active2:
			listening = "none"
		case !m.Active1:
			listening = "port2 only"
		case !m.Active2:
			listening = "port1 only"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", m.ID, m.Type, m.Port1, m.Port2, m.Max1,
			m.AgentIdle, m.AgentBusy, m.Sessions, listening)
	}
	tw.Flush()
	return 0
}
