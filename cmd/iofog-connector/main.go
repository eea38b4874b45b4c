// Command iofog-connector is the whole product in one binary: the Connector
// daemon, its command-line client, the config tools, and, when it runs as
// PID 1, the appliance's init.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
)

// Set at link time by the Makefile (-X main.version=... -X main.commit=...).
var (
	version = "dev"
	commit  = "unknown"
)

// command is one subcommand. run returns the process exit code.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *cliEnv, args []string) int
}

// cliEnv carries what every subcommand needs, so nothing hides in globals.
type cliEnv struct {
	stdout, stderr io.Writer
	version        string
	commit         string
}

func commands() []command {
	return []command{
		{"run", "run the Connector daemon in the foreground", cmdRun},
		{"status", "ask the running daemon whether it is up", cmdStatus},
		{"stop", "ask the running daemon to shut down", cmdStop},
		{"mapping", "add, remove or list mappings on the running daemon", cmdMapping},
		{"validate", "check config files (JSON, CUE or HCL); exit 1 if any is invalid", cmdValidate},
		{"compile", "compile a config file to the original's JSON settings", cmdCompile},
		{"schema", "print the CUE schema that configs are checked against", cmdSchema},
		{"update", "send an update bundle to an appliance (update --to URL BUNDLE), or show its slots (update status)", cmdUpdate},
		{"cert", "write a TLS certificate and key for the non-dev mode", cmdCert},
		{"tunnel", "agent side: carry a mapping to a local service or the ioFog agent", cmdTunnel},
		{"discover", "list the Connectors that announce themselves on the LAN", cmdDiscover},
		{"version", "print version, commit and Go version", cmdVersion},
		{"help", "print this help", nil},
	}
}

func main() {
	env := &cliEnv{stdout: os.Stdout, stderr: os.Stderr, version: version, commit: commit}

	// As PID 1 we are the appliance's init; as "modprobe" the kernel asks us
	// to load a module (we point /proc/sys/kernel/modprobe at ourselves).
	if os.Getpid() == 1 {
		os.Exit(runInit(env))
	}
	if filepath.Base(os.Args[0]) == "modprobe" {
		os.Exit(runModprobe(env, os.Args[1:]))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(dispatch(ctx, env, os.Args[1:]))
}

func dispatch(ctx context.Context, env *cliEnv, args []string) int {
	if len(args) == 0 {
		usage(env.stderr)
		return 2
	}
	name := args[0]
	switch name {
	case "help", "--help", "-h", "-?":
		usage(env.stdout)
		return 0
	case "--version", "-v":
		name = "version"
	}
	for _, c := range commands() {
		if c.name == name && c.run != nil {
			return c.run(ctx, env, args[1:])
		}
	}
	fmt.Fprintf(env.stderr, "iofog-connector: unknown command %q\n\n", name)
	usage(env.stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: iofog-connector COMMAND [ARGS]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'iofog-connector COMMAND -h' for a command's flags.")
}

func cmdVersion(_ context.Context, env *cliEnv, _ []string) int {
	fmt.Fprintf(env.stdout, "iofog-connector %s (commit %s, %s, %s/%s)\n",
		env.version, env.commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return 0
}
