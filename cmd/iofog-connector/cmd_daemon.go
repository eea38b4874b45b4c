package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/certs"
	"github.com/eclipse-iofog/iofog-connector/schema"
	"github.com/eclipse-iofog/iofog-connector/statuspage"
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
	started := time.Now()
	var cf configFlags
	fs := newFlagSet(env, "run", "run [--config FILE | --builtin-config] [--state-dir DIR] [--tls-dir DIR] [--appliance] [--appliance-status FILE] [--log-level L]")
	cf.register(fs)
	stateDir := fs.String("state-dir", defaultStateDir, "directory for the mapping store ("+relay.StoreFile+")")
	appliance := fs.Bool("appliance", false, "run as the appliance's Connector (the firewall is on unless the config turns it off)")
	level := fs.String("log-level", "", "debug, info, warn or error (default: the config's log level, else info)")
	applianceStatus := fs.String("appliance-status", "", "JSON status file kept by the appliance, shown on the status page (set by the appliance)")
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
	actx, stopAnnounce := context.WithCancel(ctx)
	defer stopAnnounce()
	announce(actx, cfg, c, env.version, log)
	page, err := statuspage.New(statuspage.Options{Connector: c, Started: started, ApplianceStatus: *applianceStatus, Logger: log})
	if err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector: status page: %v\n", err)
		return 1
	}
	c.HandleRoot(page)
	pageCtx, stopPage := context.WithCancel(ctx)
	defer stopPage()
	go page.Run(pageCtx)
	if err := c.Run(ctx); err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector: %v\n", err)
		return 1
	}
	return 0
}
