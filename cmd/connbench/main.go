// Command connbench measures the Connector's data plane against the relays a
// user could put in its place, all in one run on loopback, and prints each
// figure as a ratio to a baseline measured in the same run (PASS/MISS against
// the targets listed in the README's Performance section; nothing is asserted).
//
//	connbench [-bin out/iofog-connector] [-out FILE] [-stream 2s] [-rounds 3] ...
//	connbench relay -listen ADDR -to ADDR   (the reference splice relay, run as a child)
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/eclipse-iofog/iofog-connector/cmd/connbench/splice"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "nofile" {
		os.Exit(runNoFile(os.Args[2:], os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "relay" {
		os.Exit(runRelay(ctx, os.Args[2:], os.Stderr))
	}
	os.Exit(runBench(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// options are the bench run's knobs; the defaults make the whole run take a
// few minutes on two cores.
type options struct {
	bin      string
	out      string
	stream   time.Duration // length of each one-stream transfer
	rounds   int           // interleaved rounds over all peers; medians are reported
	setup    time.Duration // length of each session-setup run
	idle     int           // idle agent connections held for the memory figure
	pool     int           // agent connections pooled at the public mapping
	settle   time.Duration // wait before reading memory
	skipPeer map[string]bool
	phases   map[string]bool // streams, setup, memory, flood

	flood        int           // hostile connections held in the flood measurement
	floodNoFile  int           // open-file limit of the Connector under the flood
	floodRedial  time.Duration // a hostile connection's pause before dialling again
	floodSamples int           // sessions and API calls timed each way
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	var skip, only string
	fs := flag.NewFlagSet("connbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.bin, "bin", "out/iofog-connector", "the Connector binary to measure")
	fs.StringVar(&o.out, "out", "", "also write the report to this file")
	fs.DurationVar(&o.stream, "stream", 1500*time.Millisecond, "duration of each one-stream transfer")
	fs.IntVar(&o.rounds, "rounds", 5, "interleaved rounds over all peers (medians are reported)")
	fs.DurationVar(&o.setup, "setup", 1500*time.Millisecond, "duration of each session-setup run")
	fs.IntVar(&o.idle, "idle", 20000, "idle authenticated agent connections held for the memory figure (0 skips it)")
	fs.IntVar(&o.pool, "pool", 60, "agent connections pooled at the public mapping (the Controller asks for 60)")
	fs.DurationVar(&o.settle, "settle", 3*time.Second, "wait before reading the Connector's memory")
	fs.StringVar(&skip, "skip", "", "comma-separated peers to leave out: socat, haproxy, connector")
	fs.StringVar(&only, "only", "streams,setup,memory,flood", "comma-separated measurements to run: streams, setup, memory, flood")
	fs.IntVar(&o.flood, "flood", 5000, "hostile connections held against one mapping in the flood measurement")
	fs.IntVar(&o.floodNoFile, "flood-nofile", 1024, "open-file limit of the Connector in the flood measurement")
	fs.DurationVar(&o.floodRedial, "flood-redial", time.Second, "pause before a closed hostile connection dials again")
	fs.IntVar(&o.floodSamples, "flood-samples", 1000, "sessions and API calls timed without and during the flood")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.rounds < 1 || o.stream <= 0 || o.setup <= 0 || o.pool < 1 || o.idle < 0 || o.flood < 0 || o.floodNoFile < 64 || o.floodSamples < 1 {
		err := fmt.Errorf("connbench: -rounds, -stream, -setup, -pool and -flood-samples must be positive, -idle and -flood not negative, -flood-nofile at least 64")
		fmt.Fprintln(stderr, err)
		return o, err
	}
	comma := func(r rune) bool { return r == ',' }
	o.skipPeer = map[string]bool{}
	for _, p := range strings.FieldsFunc(skip, comma) {
		o.skipPeer[p] = true
	}
	o.phases = map[string]bool{}
	for _, p := range strings.FieldsFunc(only, comma) {
		if p != "streams" && p != "setup" && p != "memory" && p != "flood" {
			err := fmt.Errorf("connbench: -only: unknown measurement %q (streams, setup, memory, flood)", p)
			fmt.Fprintln(stderr, err)
			return o, err
		}
		o.phases[p] = true
	}
	return o, nil
}

// runRelay is the reference relay as its own process, so that its CPU time is
// read from /proc exactly as the Connector's is.
func runRelay(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("connbench relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to accept on")
	to := fs.String("to", "", "address to relay each connection to")
	copyBuf := fs.Int("copy", 0, "copy through a user-space buffer of this many bytes instead of splicing (0: splice)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if *to == "" {
		log.Error("connbench relay: -to is required")
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Error("connbench relay: cannot listen", "addr", *listen, "err", err)
		return 1
	}
	serve := splice.Serve
	if *copyBuf > 0 {
		serve = func(ctx context.Context, ln net.Listener, to string) error {
			return splice.ServeCopy(ctx, ln, to, *copyBuf)
		}
	}
	if err := serve(ctx, ln, *to); err != nil {
		log.Error("connbench relay stopped", "err", err)
		return 1
	}
	return 0
}
