package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/eclipse-iofog/iofog-connector/tunnel"
)

// cmdTunnel is the agent side: a drop-in for an ioFog agent's network
// container.
func cmdTunnel(ctx context.Context, env *cliEnv, args []string) int {
	fs := newFlagSet(env, "tunnel", "tunnel (--config FILE | --from-agent [--agent URL] [--id ID]) [--log-level L]")
	file := fs.String("config", "", "the JSON config the Controller writes for the network container (mode, host, port, passcode, ...)")
	fromAgent := fs.Bool("from-agent", false, "ask the local ioFog agent for the config and follow its changes; in private mode carry the agent's IoMessages")
	agentURL := fs.String("agent", tunnel.DefaultAgentURL, "the agent's API (with --from-agent); host iofog falls back to 127.0.0.1 when it does not resolve")
	id := fs.String("id", os.Getenv("SELFNAME"), "this container's id as the agent knows it (with --from-agent; default $SELFNAME)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "iofog-connector tunnel: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if (*file == "") == !*fromAgent {
		fmt.Fprintln(env.stderr, "iofog-connector tunnel: give exactly one of --config FILE and --from-agent")
		fs.Usage()
		return 2
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector tunnel: --log-level %q: want debug, info, warn or error\n", *level)
		return 2
	}
	log := slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: lvl}))
	t := tunnel.New(tunnel.Options{Logger: log, Stdin: os.Stdin, Stdout: os.Stdout})
	if *fromAgent {
		if err := t.RunFromAgent(ctx, tunnel.Agent{URL: *agentURL, ID: *id}); err != nil {
			fmt.Fprintf(env.stderr, "iofog-connector tunnel: %v\n", err)
			return 1
		}
		return 0
	}
	data, err := os.ReadFile(*file)
	if err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector tunnel: %v\n", err)
		return 1
	}
	cfg, err := tunnel.ParseConfig(*file, data)
	if err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector tunnel: %v\n", err)
		return 1
	}
	if err := t.RunConfig(ctx, cfg); err != nil {
		fmt.Fprintf(env.stderr, "iofog-connector tunnel: %v\n", err)
		return 1
	}
	return 0
}
