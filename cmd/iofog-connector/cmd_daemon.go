package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/certs"
	"github.com/eclipse-iofog/iofog-connector/schema"
)

// Where the original keeps its files; every one is overridable by a flag.
const (
	defaultConfigFile = "/etc/iofog-connector/iofog-connector.conf"
	defaultStateDir   = "/etc/iofog-connector"
)

// configFlags are the flags that say which config and TLS files to use,
// shared by `run` and the commands that talk to a running daemon.
type configFlags struct {
	config  string
	builtin bool
	tlsDir  string
}

func (f *configFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.config, "config", defaultConfigFile, "settings file: the original's JSON, or CUE (.cue) or HCL (.hcl)")
	fs.BoolVar(&f.builtin, "builtin-config", false, "ignore --config and use the built-in default settings (dev mode, ports 6000-6050)")
	fs.StringVar(&f.tlsDir, "tls-dir", defaultTLSDir, "directory holding "+certs.CertFile+" and "+certs.KeyFile+" (used when dev is false)")
}

func (f *configFlags) load() (*schema.Config, error) {
	if f.builtin {
		return schema.Default(), nil
	}
	cfg, err := schema.Load(f.config)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w\n(write one with `iofog-connector compile`, point --config at yours, or use --builtin-config for the defaults)", err)
		}
		return nil, err
	}
	return cfg, nil
}

func newFlagSet(env *cliEnv, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		fmt.Fprintln(env.stderr, "Usage: iofog-connector "+usage)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags returns -1 to go on, else the exit code.
func parseFlags(fs *flag.FlagSet, args []string) int {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	return -1
}

func cmdRun(ctx context.Context, env *cliEnv, args []string) int {
	var cf configFlags
	fs := newFlagSet(env, "run", "run [--config FILE | --builtin-config] [--state-dir DIR] [--tls-dir DIR] [--appliance] [--log-level L]")
	cf.register(fs)
	stateDir := fs.String("state-dir", defaultStateDir, "directory for the mapping store ("+relay.StoreFile+")")
	appliance := fs.Bool("appliance", false, "run as the appliance's Connector (the firewall is on unless the config turns it off)")
	level := fs.String("log-level", "", "debug, info, warn or error (default: the config's log level, else info)")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "iofog-connector run: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg, err := cf.load()
	if err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector: config: %v\n", err)
		return 1
	}
	lvlName := *level
	if lvlName == "" {
		lvlName = cfg.Log.Level
	}
	var lvl slog.Level
	if lvlName != "" {
		if err := lvl.UnmarshalText([]byte(lvlName)); err != nil {
			fmt.Fprintf(env.stderr, "iofog-connector run: --log-level %q: want debug, info, warn or error\n", lvlName)
			return 2
		}
	}
	log := slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: lvl}))

	if soft, hard, err := raiseFileLimit(); err != nil {
		log.Warn("cannot raise the open-file limit; the number of connections is capped by it", "limit", soft, "err", err)
	} else {
		log.Debug("open-file limit", "soft", soft, "hard", hard)
	}
	if err := os.MkdirAll(*stateDir, 0o755); err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector: state directory: %v\n", err)
		return 1
	}
	gate, undo, err := newPortGate(ctx, cfg, *appliance, log)
	if err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector: %v\n", err)
		return 1
	}
	defer undo()
	opts := relay.Options{
		Config:   cfg,
		StateDir: *stateDir,
		CertFile: filepath.Join(cf.tlsDir, certs.CertFile),
		KeyFile:  filepath.Join(cf.tlsDir, certs.KeyFile),
		Version:  env.version,
		Logger:   log,
	}
	if *appliance {
		opts.Update = updateProxy(applianceUpdateSocket)
	}
	if gate != nil {
		opts.Gate = gate
		if col, ok := gate.(interface{ Collector() prometheus.Collector }); ok {
			opts.Collectors = append(opts.Collectors, col.Collector())
		}
	}
	c, err := relay.New(opts)
	if err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector: %v\n", err)
		return 1
	}
	if err := c.Run(ctx); err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector: %v\n", err)
		return 1
	}
	return 0
}

// raiseFileLimit lifts the soft open-file limit to the hard one: every agent
// and public connection is a file descriptor.
func raiseFileLimit() (soft, hard uint64, err error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, 0, err
	}
	if r.Cur < r.Max {
		r.Cur = r.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
			return r.Cur, r.Max, err
		}
	}
	return r.Cur, r.Max, nil
}

// apiClient reaches a running daemon the way the original's CLI did: at the
// config's address and API port, HTTP in dev mode, else HTTPS trusting the
// local certificate file.
type apiClient struct {
	base string
	http *http.Client
}

// client returns an API client for the daemon the flags point at, or
// reports why there is none on stderr.
func (f *configFlags) client(env *cliEnv) (*apiClient, bool) {
	c, err := newAPIClient(*f)
	if err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector: %v\n", err)
		return nil, false
	}
	return c, true
}

func newAPIClient(cf configFlags) (*apiClient, error) {
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
	port := cfg.API.Port(cfg.Dev)
	c := &apiClient{http: &http.Client{Timeout: 30 * time.Second}}
	if cfg.Dev {
		c.base = "http://" + net.JoinHostPort(host, strconv.Itoa(port))
		return c, nil
	}
	c.base = "https://" + net.JoinHostPort(host, strconv.Itoa(port))
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
	c.http.Transport = &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !bytes.Equal(raw[0], want) {
				return fmt.Errorf("the daemon's certificate is not %s", certFile)
			}
			return nil
		},
	}}
	return c, nil
}

// post sends a form and decodes the JSON reply. A reply with an
// errormessage is an error.
func (c *apiClient) post(ctx context.Context, path string, form url.Values, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	var e struct {
		ErrorMessage *string `json:"errormessage"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		return fmt.Errorf("%s: HTTP %d, reply is not JSON: %q", path, resp.StatusCode, body)
	}
	if e.ErrorMessage != nil {
		return &apiError{msg: *e.ErrorMessage, code: resp.StatusCode}
	}
	if out != nil {
		return json.Unmarshal(body, out)
	}
	return nil
}

type apiError struct {
	msg  string
	code int
}

func (e *apiError) Error() string {
	return fmt.Sprintf("the Connector refused: %s (HTTP %d)", e.msg, e.code)
}

func (c *apiClient) command(ctx context.Context, cmd string) (string, error) {
	var r struct {
		Response string `json:"response"`
	}
	err := c.post(ctx, "/api/v2/commandline", url.Values{"command": {cmd}, "params": {""}}, &r)
	return r.Response, err
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
	if _, err := c.command(ctx, "status"); err != nil {
		fmt.Fprintln(env.stdout, "iofog-connector is stopped.")
		fmt.Fprintf(env.stderr, "(%s: %v)\n", c.base, err)
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
	if _, err := c.command(ctx, "stop"); err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			fmt.Fprintf(env.stderr, "iofog-connector: %v\n", err)
			return 1
		}
		fmt.Fprintln(env.stdout, "iofog-connector is stopped.")
		return 0
	}
	// The daemon answers before it shuts down; wait until it is gone.
	c.http.Timeout = 2 * time.Second
	deadline := time.Now().Add(*wait)
	for time.Now().Before(deadline) {
		if _, err := c.command(ctx, "status"); err != nil {
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
	var mapping map[string]any
	switch *typ {
	case "public":
		if *max == 0 {
			*max = 60
		}
		mapping = map[string]any{"type": "public", "maxconnections": *max, "heartbeatabsencethreshold": *threshold}
	case "private":
		if *max == 0 {
			*max = 1
		}
		mapping = map[string]any{"type": "private", "maxconnectionsport1": *max, "maxconnectionsport2": *max,
			"heartbeatabsencethresholdport1": *threshold, "heartbeatabsencethresholdport2": *threshold}
	default:
		fmt.Fprintln(env.stderr, "iofog-connector mapping add: --type must be public or private")
		return 2
	}
	js, _ := json.Marshal(mapping)
	c, ok := cf.client(env)
	if !ok {
		return 1
	}
	var r struct {
		ID        string `json:"id"`
		Port1     int    `json:"port1"`
		Port2     int    `json:"port2"`
		Passcode1 string `json:"passcode1"`
		Passcode2 string `json:"passcode2"`
	}
	if err := c.post(ctx, "/api/v2/mapping/add", url.Values{"mapping": {string(js)}}, &r); err != nil {
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
	if err := c.post(ctx, "/api/v2/mapping/remove", url.Values{"mappingid": {fs.Arg(0)}}, nil); err != nil {
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
	var r struct {
		Mappings []struct {
			ID        string `json:"id"`
			Type      string `json:"type"`
			Port1     int    `json:"port1"`
			Port2     int    `json:"port2"`
			Max1      int    `json:"maxconnectionsport1"`
			Active1   bool   `json:"active1"`
			Active2   bool   `json:"active2"`
			Sessions  int64  `json:"publicsessions"`
			AgentIdle int    `json:"agentsidle"`
			AgentBusy int    `json:"agentspaired"`
		} `json:"mappings"`
	}
	if err := c.post(ctx, "/api/v2/mapping/list", nil, &r); err != nil {
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
