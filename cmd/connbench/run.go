package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/eclipse-iofog/iofog-connector/cmd/connbench/agent"
	"github.com/eclipse-iofog/iofog-connector/cmd/connbench/procstat"
	"github.com/eclipse-iofog/iofog-connector/cmd/connbench/report"
	"github.com/eclipse-iofog/iofog-connector/cmd/connbench/traffic"
	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/agentclient"
	"github.com/eclipse-iofog/iofog-connector/tunnel"
)

// The two directions of a public session. The far end stands in for the
// microservice: for the Connector it is the agent connection itself, so
// that one hop sits between client and far end, as with every other relay.
const (
	toAgent  = "public->agent" // the client writes, the far end sinks
	toPublic = "agent->public" // the far end writes, the client sinks
)

// Peers in the order each round visits them.
const (
	pDirect    = "direct"
	pSplice    = "splice"
	pCopy      = "copy"
	pHAProxy   = "haproxy"
	pSocat     = "socat"
	pConnector = "connector"
	pAgent     = "connector+agent"  // through the Connector and relay/agentclient to the far end
	pTunnel    = "connector+tunnel" // through the Connector and the tunnel subcommand's code to the far end
	pSplice2   = "splice2"          // two minimal splice relays in a row: the whole path's reference
)

func peerOrder() []string {
	return []string{pDirect, pSplice, pCopy, pHAProxy, pSocat, pConnector, pAgent, pTunnel, pSplice2}
}

// copyBuf is the copy relay's buffer, the size the Connector reads agent
// bytes with once a session is busy.
const copyBuf = 64 << 10

// concurrencies are the numbers of clients setting up sessions at once.
func concurrencies() []int { return []int{1, 8} }

type stream struct {
	rates []float64
	bytes int64
	cpu   time.Duration
	err   error
}

type setupRuns struct {
	rates   []float64
	failed  int
	lastErr error
	// cpu is the relay's CPU time over all rounds and sessions the
	// sessions completed then, when the relay is a process of its own.
	cpu      time.Duration
	sessions int
}

type memory struct {
	held       int
	rss0, rss1 int64
	go0, go1   goMemory
	goOK       bool
	err        error
	duration   time.Duration
}

type bench struct {
	o       options
	log     *slog.Logger
	far     *traffic.Far
	peers   map[string]peer
	missing map[string]string // peer -> why it is not measured
	streams map[string]map[string]*stream
	setups  map[int]map[string]*setupRuns
	mem     memory
	flood   floodResult
	notes   []string
	// loadStart is the load average when measuring began.
	loadStart string
}

// loadavg returns the 1-minute load average: on shared cores, the figures
// are only as steady as this is low.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "unknown"
	}
	return f[0]
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return 2
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // after the peers stop (deferred later, run first): ends the agent pools
	log := slog.New(slog.NewTextHandler(stderr, nil))
	b := &bench{
		o: o, log: log, far: traffic.NewFar(),
		peers: map[string]peer{}, missing: map[string]string{},
		streams: map[string]map[string]*stream{toAgent: {}, toPublic: {}},
		setups:  map[int]map[string]*setupRuns{},
	}
	if o.phases["memory"] || o.phases["flood"] {
		if err := b.raiseFileLimit(); err != nil {
			b.notes = append(b.notes, err.Error())
		}
	}
	dir, err := os.MkdirTemp("", "connbench-")
	if err != nil {
		log.Error("connbench: cannot make a temporary directory", "err", err)
		return 1
	}
	defer os.RemoveAll(dir)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Error("connbench: cannot listen on loopback", "err", err)
		return 1
	}
	go b.far.Listen(ctx, ln)
	target := ln.Addr().String()
	b.peers[pDirect] = peer{name: pDirect, addr: target}

	k := b.startPeers(ctx, dir, target)
	defer func() {
		for _, p := range b.peers {
			if p.stop != nil {
				p.stop()
			}
		}
	}()
	start := time.Now()
	b.loadStart = loadavg()
	if o.phases["streams"] {
		b.measureStreams(ctx)
	}
	if o.phases["setup"] {
		b.measureSetup(ctx)
	}
	if k != nil && o.idle > 0 && o.phases["memory"] {
		b.measureMemory(ctx, k)
	}
	if !o.skipPeer[pConnector] && o.flood > 0 && o.phases["flood"] {
		b.measureFlood(ctx, dir)
	}
	if ctx.Err() != nil {
		log.Error("connbench: interrupted")
		return 1
	}

	var out strings.Builder
	b.writeReport(ctx, &out, time.Since(start))
	fmt.Fprint(stdout, out.String())
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(out.String()), 0o644); err != nil {
			log.Error("connbench: cannot write the report", "file", o.out, "err", err)
			return 1
		}
	}
	return 0
}

// fdReserve is what each side needs besides the idle connections: the
// pooled agent connections, listeners, the API, pipes.
const fdReserve = 256

// raiseFileLimit makes room for the idle agent connections on both sides;
// the Connector inherits the hard limit and raises its soft limit to it.
// Raising the hard limit needs CAP_SYS_RESOURCE; without it the run holds
// as many idle connections as the hard limit leaves room for, and says so.
func (b *bench) raiseFileLimit() error {
	want := uint64(max(b.o.idle, b.o.flood)) + fdReserve
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("reading RLIMIT_NOFILE: %w", err)
	}
	if lim.Max < want {
		raised := syscall.Rlimit{Cur: want, Max: want}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err == nil {
			return nil
		}
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raising RLIMIT_NOFILE to its hard limit %d: %w", lim.Max, err)
	}
	// The Connector keeps part of its limit for the API and pipes, and
	// holds the pooled agent connections besides.
	if room := int(min(int64(lim.Max)-fdReserve, relay.DataConnRoom(lim.Max, poolPorts)-int64(2*b.o.pool))); room < b.o.idle {
		asked := b.o.idle
		b.o.idle = max(room, 0)
		return fmt.Errorf("open-file hard limit is %d and cannot be raised here (no CAP_SYS_RESOURCE): held %d idle connections instead of %d", lim.Max, b.o.idle, asked)
	}
	if room := int(lim.Max) - fdReserve; room < b.o.flood {
		asked := b.o.flood
		b.o.flood = max(room, 0)
		return fmt.Errorf("open-file hard limit is %d and cannot be raised here (no CAP_SYS_RESOURCE): flooded with %d connections instead of %d", lim.Max, b.o.flood, asked)
	}
	return nil
}

func (b *bench) startPeers(ctx context.Context, dir, target string) *connector {
	self, err := os.Executable()
	if err != nil {
		b.missing[pSplice] = fmt.Sprintf("cannot find connbench's own binary to run the relay: %v", err)
	} else {
		if p, err := startSplice(self, target, 0); err != nil {
			b.missing[pSplice] = err.Error()
		} else {
			b.peers[pSplice] = p
		}
		if p, err := startSplice(self, target, copyBuf); err != nil {
			b.missing[pCopy] = err.Error()
		} else {
			b.peers[pCopy] = p
		}
		if first, ok := b.peers[pSplice]; !ok {
			b.missing[pSplice2] = "the first splice relay did not start"
		} else if p, err := startSplice(self, first.addr, 0); err != nil {
			b.missing[pSplice2] = err.Error()
		} else {
			p.pid = 0 // two processes: its CPU is not charged
			b.peers[pSplice2] = p
		}
	}
	starters := map[string]func() (peer, error){
		pSocat:   func() (peer, error) { return startSocat(target) },
		pHAProxy: func() (peer, error) { return startHAProxy(dir, target) },
	}
	for name, start := range starters {
		if b.o.skipPeer[name] {
			b.missing[name] = "left out with -skip"
			continue
		}
		if p, err := start(); err != nil {
			b.missing[name] = err.Error()
		} else {
			b.peers[name] = p
		}
	}
	if b.o.skipPeer[pConnector] {
		b.missing[pConnector] = "left out with -skip"
		return nil
	}
	k, err := startConnector(b.o.bin, dir)
	if err != nil {
		b.missing[pConnector] = err.Error()
		return nil
	}
	m, err := k.addPublic(b.o.pool)
	if err != nil {
		k.stop()
		b.missing[pConnector] = err.Error()
		return nil
	}
	port1 := net.JoinHostPort("127.0.0.1", fmt.Sprint(m.Port1))
	pool := agent.StartPool(ctx, port1, m.Passcode1, b.o.pool, b.far.Serve)
	end := time.Now().Add(15 * time.Second)
	for pool.Authed() < int64(b.o.pool) && time.Now().Before(end) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	if got := pool.Authed(); got < int64(b.o.pool) {
		b.notes = append(b.notes, fmt.Sprintf("only %d of %d pooled agent connections authenticated within 15s", got, b.o.pool))
	}
	b.peers[pConnector] = k.peer(m)
	if p, err := b.startAgentClient(ctx, k, target); err != nil {
		b.missing[pAgent] = err.Error()
	} else {
		b.peers[pAgent] = p
	}
	if p, err := b.startTunnel(ctx, k, target); err != nil {
		b.missing[pTunnel] = err.Error()
	} else {
		b.peers[pTunnel] = p
	}
	return k
}

// startTunnel puts the tunnel (the agent-side subcommand's code) between the
// Connector and the far end, configured as the Controller configures an
// agent's network container. Its CPU is not charged (it runs inside
// connbench).
func (b *bench) startTunnel(ctx context.Context, k *connector, target string) (peer, error) {
	m, err := k.addPublic(b.o.pool)
	if err != nil {
		return peer{}, err
	}
	_, farPort, _ := net.SplitHostPort(target)
	port, _ := strconv.Atoi(farPort)
	tn := tunnel.New(tunnel.Options{BackoffMin: 10 * time.Millisecond, BackoffMax: time.Second})
	go tn.RunConfig(ctx, tunnel.Config{
		Mode: "public", Host: "127.0.0.1", Port: m.Port1, Passcode: m.Passcode1,
		ConnectionCount: b.o.pool, LocalHost: "127.0.0.1", LocalPort: port,
		HeartbeatFrequency: 20000, HeartbeatAbsenceThreshold: 60000, DevMode: true,
	})
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := tn.Wait(wctx, func(s tunnel.Stats) bool { return s.Idle >= int64(b.o.pool) }); err != nil {
		return peer{}, fmt.Errorf("tunnel: pooled connections not up within 15s: %w", err)
	}
	return peer{name: pTunnel, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(m.Port2))}, nil
}

// startAgentClient puts the project's agent client between the Connector and
// the far end, as on a real agent: the whole path a user's bytes take, two
// relays deep. Its CPU is not charged (it runs inside connbench).
func (b *bench) startAgentClient(ctx context.Context, k *connector, target string) (peer, error) {
	m, err := k.addPublic(b.o.pool)
	if err != nil {
		return peer{}, err
	}
	_, farPort, _ := net.SplitHostPort(target)
	port, _ := strconv.Atoi(farPort)
	// The Controller's settings for an agent's network container (docs/protocol.md §5).
	client, err := agentclient.New(agentclient.Config{
		Mode: "public", Host: "127.0.0.1", Port: m.Port1, Passcode: m.Passcode1,
		ConnectionCount: b.o.pool, LocalHost: "127.0.0.1", LocalPort: port,
		HeartbeatFrequency: 20000, HeartbeatAbsenceThreshold: 60000, DevMode: true,
	}, agentclient.Options{RetryDelay: 10 * time.Millisecond})
	if err != nil {
		return peer{}, fmt.Errorf("agent client: %w", err)
	}
	go client.Run(ctx)
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := client.WaitAuthorized(wctx, b.o.pool); err != nil {
		return peer{}, fmt.Errorf("agent client: %d of %d pooled connections authorized within 15s: %w", client.Stats().Idle, b.o.pool, err)
	}
	return peer{name: pAgent, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(m.Port2))}, nil
}

// present returns the peers that are running, in the order of round r: each
// round starts one peer later, so no peer always follows the same neighbour
// (socat's reaped children, a relay's buffers warming up).
func (b *bench) present(r int, streams bool) []string {
	var out []string
	for _, name := range peerOrder() {
		if name == pCopy && !streams {
			continue // sets up sessions exactly as the splice relay does
		}
		if _, ok := b.peers[name]; ok {
			out = append(out, name)
		}
	}
	if len(out) > 0 {
		k := r % len(out)
		out = append(out[k:], out[:k]...)
	}
	return out
}

func cpuOf(pid int) (time.Duration, bool) {
	if pid == 0 {
		return 0, false
	}
	d, err := procstat.CPU(pid)
	return d, err == nil
}

func (b *bench) measureStreams(ctx context.Context) {
	for r := range b.o.rounds {
		for _, dir := range []string{toAgent, toPublic} {
			for _, name := range b.present(r, true) {
				if ctx.Err() != nil {
					return
				}
				p := b.peers[name]
				s := b.streams[dir][name]
				if s == nil {
					s = &stream{}
					b.streams[dir][name] = s
				}
				c0, ok0 := cpuOf(p.pid)
				var t traffic.Transfer
				var err error
				if dir == toAgent {
					t, err = b.far.Push(ctx, traffic.TCP(p.addr), b.o.stream)
				} else {
					t, err = traffic.Pull(ctx, traffic.TCP(p.addr), b.o.stream)
				}
				// socat's per-connection child is charged to it once reaped.
				time.Sleep(200 * time.Millisecond)
				c1, ok1 := cpuOf(p.pid)
				if err != nil {
					s.err = err
					b.log.Warn("stream failed", "peer", name, "dir", dir, "round", r+1, "err", err)
					continue
				}
				s.rates = append(s.rates, t.Rate())
				if ok0 && ok1 {
					s.bytes += t.Bytes
					s.cpu += c1 - c0
				}
				b.log.Info("stream", "peer", name, "dir", dir, "round", r+1, "GB/s", fmt.Sprintf("%.2f", t.Rate()/1e9), "cpu", c1-c0)
			}
		}
	}
}

func (b *bench) measureSetup(ctx context.Context) {
	for _, conc := range concurrencies() {
		b.setups[conc] = map[string]*setupRuns{}
		for r := range b.o.rounds {
			for _, name := range b.present(r, false) {
				if ctx.Err() != nil {
					return
				}
				s := b.setups[conc][name]
				if s == nil {
					s = &setupRuns{}
					b.setups[conc][name] = s
				}
				p := b.peers[name]
				c0, ok0 := cpuOf(p.pid)
				res := traffic.Setup(ctx, traffic.TCP(p.addr), conc, b.o.setup)
				// Let the relay finish closing the last sessions before
				// its CPU is read.
				time.Sleep(100 * time.Millisecond)
				if c1, ok1 := cpuOf(p.pid); ok0 && ok1 {
					s.cpu += c1 - c0
					s.sessions += res.OK
				}
				s.rates = append(s.rates, res.PerSecond())
				s.failed += res.Failed
				if res.LastErr != nil {
					s.lastErr = res.LastErr
				}
				b.log.Info("setup", "peer", name, "concurrent", conc, "round", r+1, "per_s", fmt.Sprintf("%.0f", res.PerSecond()), "failed", res.Failed)
			}
		}
	}
}

// measureMemory holds idle authenticated agent connections at a mapping of
// their own and charges the Connector's RSS growth to them.
func (b *bench) measureMemory(ctx context.Context, k *connector) {
	m, err := k.addPublic(b.o.idle)
	if err != nil {
		b.mem.err = err
		return
	}
	defer k.remove(m.ID)
	time.Sleep(b.o.settle)
	pid := k.pid()
	b.mem.rss0, err = procstat.RSS(pid)
	if err != nil {
		b.mem.err = err
		return
	}
	b.mem.go0, b.mem.goOK = k.goMemory()
	// Spread the sources over 127.0.0.2-5 so no single address's ephemeral
	// ports run short, whatever the other measurements left in TIME_WAIT.
	sources := []net.IP{{127, 0, 0, 2}, {127, 0, 0, 3}, {127, 0, 0, 4}, {127, 0, 0, 5}}
	port1 := net.JoinHostPort("127.0.0.1", fmt.Sprint(m.Port1))
	start := time.Now()
	conns, err := agent.Hold(ctx, port1, m.Passcode1, b.o.idle, sources, 64)
	b.mem.duration = time.Since(start)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	b.mem.held = len(conns)
	b.mem.err = err
	b.log.Info("holding idle agent connections", "held", len(conns), "took", b.mem.duration.Round(time.Millisecond), "err", err)
	time.Sleep(b.o.settle)
	b.mem.rss1, err = procstat.RSS(pid)
	if err != nil {
		b.mem.err = err
		return
	}
	go1, ok := k.goMemory()
	b.mem.go1, b.mem.goOK = go1, ok && b.mem.goOK
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (b *bench) rate(dir, name string) float64 {
	if s := b.streams[dir][name]; s != nil {
		return median(s.rates)
	}
	return math.NaN()
}

func (b *bench) cpuPerGiB(dir, name string) float64 {
	s := b.streams[dir][name]
	if s == nil || s.bytes == 0 {
		return math.NaN()
	}
	return s.cpu.Seconds() / (float64(s.bytes) / (1 << 30))
}

// setupCPU is the relay's CPU microseconds per session set up, over all
// rounds.
func (b *bench) setupCPU(conc int, name string) float64 {
	s := b.setups[conc][name]
	if s == nil || s.sessions == 0 {
		return math.NaN()
	}
	return float64(s.cpu.Microseconds()) / float64(s.sessions)
}

func (b *bench) setupRate(conc int, name string) float64 {
	if s := b.setups[conc][name]; s != nil {
		return median(s.rates)
	}
	return math.NaN()
}

// why says why a figure of peer is missing or doubtful, or "".
func (b *bench) why(name string, errs ...error) string {
	if _, ok := b.missing[name]; ok {
		return label(name) + " not measured (see below)"
	}
	for _, err := range errs {
		if err != nil {
			return name + ": " + err.Error()
		}
	}
	return ""
}

func (b *bench) streamErr(dir, name string) error {
	if s := b.streams[dir][name]; s != nil {
		return s.err
	}
	return nil
}

func (b *bench) setupErr(conc int, name string) error {
	if s := b.setups[conc][name]; s != nil && s.failed > 0 {
		return fmt.Errorf("%d sessions failed, last: %w", s.failed, s.lastErr)
	}
	return nil
}

func join(notes ...string) string {
	var out []string
	for _, n := range notes {
		if n != "" {
			out = append(out, n)
		}
	}
	return strings.Join(out, "; ")
}

// label is how the report names a peer.
func label(name string) string {
	switch name {
	case pSplice:
		return "splice relay"
	case pCopy:
		return "copy relay"
	case pConnector:
		return "Connector"
	case pAgent:
		return "Connector + agent client"
	case pTunnel:
		return "Connector + tunnel"
	case pSplice2:
		return "two splice relays"
	}
	return name
}

func (b *bench) rows() []report.Row {
	var rows []report.Row
	if b.o.phases["streams"] {
		rows = append(rows, b.streamRows()...)
	}
	if b.o.phases["setup"] {
		rows = append(rows, b.setupRows()...)
	}
	if b.o.phases["memory"] && b.o.idle > 0 {
		rows = append(rows, b.memoryRows()...)
	}
	if b.o.phases["flood"] && b.o.flood > 0 {
		rows = append(rows, b.floodRows()...)
	}
	return rows
}

func (b *bench) streamRows() []report.Row {
	var rows []report.Row
	targets := map[string]float64{toAgent: 0.9, toPublic: 0.7}
	cpuTargets := map[string]float64{toAgent: 0.35, toPublic: 0.6}
	for _, dir := range []string{toAgent, toPublic} {
		cmp := func(value, base string, t report.Target) report.Row {
			return report.Row{
				Figure:   fmt.Sprintf("throughput %s: %s", dir, label(value)),
				Value:    b.rate(dir, value),
				Baseline: b.rate(dir, base),
				BaseName: label(base),
				Format:   report.GBps,
				Target:   t,
				Note:     join(b.why(value, b.streamErr(dir, value)), b.why(base, b.streamErr(dir, base))),
			}
		}
		rows = append(rows,
			cmp(pConnector, pSplice, report.Target{AtLeast: true, Limit: targets[dir], OnRatio: true}),
			cmp(pConnector, pHAProxy, report.Target{AtLeast: true, Limit: 2.0, OnRatio: true}),
			cmp(pConnector, pSocat, report.Target{}),
			cmp(pConnector, pDirect, report.Target{}),
			cmp(pAgent, pSplice, report.Target{}),
			cmp(pTunnel, pSplice2, report.Target{AtLeast: true, Limit: 0.8, OnRatio: true}),
			cmp(pAgent, pSplice2, report.Target{}),
			cmp(pSplice, pDirect, report.Target{}),
			cmp(pCopy, pDirect, report.Target{}),
			cmp(pHAProxy, pDirect, report.Target{}),
			cmp(pSocat, pDirect, report.Target{}),
		)
	}
	for _, dir := range []string{toAgent, toPublic} {
		cpu := func(value string, t report.Target) report.Row {
			return report.Row{
				Figure:   fmt.Sprintf("CPU per GiB %s: %s", dir, label(value)),
				Value:    b.cpuPerGiB(dir, value),
				Baseline: b.cpuPerGiB(dir, pSplice),
				BaseName: label(pSplice),
				Format:   report.SecPerGiB,
				Target:   t,
				Note:     b.why(value, b.streamErr(dir, value)),
			}
		}
		rows = append(rows,
			cpu(pConnector, report.Target{Limit: cpuTargets[dir], Unit: "s/GiB"}),
			cpu(pCopy, report.Target{}),
			cpu(pHAProxy, report.Target{}),
			cpu(pSocat, report.Target{}),
		)
	}
	return rows
}

func (b *bench) setupRows() []report.Row {
	var rows []report.Row
	for _, conc := range concurrencies() {
		cmp := func(value, base string, t report.Target) report.Row {
			who := label(value)
			if value == pConnector {
				who += " (pooled)"
			}
			return report.Row{
				Figure:   fmt.Sprintf("session setup, %d concurrent: %s", conc, who),
				Value:    b.setupRate(conc, value),
				Baseline: b.setupRate(conc, base),
				BaseName: label(base),
				Format:   report.PerSec,
				Target:   t,
				Note:     join(b.why(value, b.setupErr(conc, value)), b.why(base, b.setupErr(conc, base))),
			}
		}
		// A pooled session should cost less than a dial: ahead of the
		// splice relay and of haproxy. The whole path, two relays deep,
		// is held to two splice relays in a row.
		rows = append(rows,
			cmp(pConnector, pSplice, report.Target{AtLeast: true, Limit: 1.3, OnRatio: true}),
			cmp(pConnector, pHAProxy, report.Target{AtLeast: true, Limit: 1.0, OnRatio: true}),
			cmp(pConnector, pDirect, report.Target{}),
			cmp(pAgent, pSplice, report.Target{}),
			cmp(pTunnel, pSplice2, report.Target{AtLeast: true, Limit: 0.8, OnRatio: true}),
			cmp(pAgent, pSplice2, report.Target{}),
			cmp(pSplice, pDirect, report.Target{}),
			cmp(pHAProxy, pDirect, report.Target{}),
			cmp(pSocat, pDirect, report.Target{}),
		)
	}
	return rows
}

func (b *bench) memoryRows() []report.Row {
	perConn, heapPerConn := math.NaN(), math.NaN()
	if b.mem.held > 0 {
		perConn = float64(b.mem.rss1-b.mem.rss0) / float64(b.mem.held) / 1024
		if b.mem.goOK {
			heapPerConn = (b.mem.go1.heap + b.mem.go1.stack - b.mem.go0.heap - b.mem.go0.stack) / float64(b.mem.held) / 1024
		}
	}
	memNote := b.why(pConnector, b.mem.err)
	if b.mem.held > 0 && b.mem.held < b.o.idle {
		memNote = join(memNote, fmt.Sprintf("only %d of %d connections held", b.mem.held, b.o.idle))
	}
	kib := func(v float64) string { return fmt.Sprintf("%.2f KiB", v) }
	return []report.Row{
		report.Row{
			Figure:   fmt.Sprintf("memory per idle agent connection (%d held): RSS", b.o.idle),
			Value:    perConn,
			Baseline: math.NaN(),
			Format:   kib,
			Target:   report.Target{Limit: 12, Unit: "KiB"},
			Note:     memNote,
		},
		report.Row{
			Figure:   fmt.Sprintf("memory per idle agent connection (%d held): Go heap+stacks", b.o.idle),
			Value:    heapPerConn,
			Baseline: math.NaN(),
			Format:   kib,
			Note:     map[bool]string{false: "the Connector serves no go_memstats on /metrics", true: ""}[b.mem.goOK || b.mem.held == 0],
		},
	}
}

func (b *bench) writeReport(ctx context.Context, w io.Writer, took time.Duration) {
	osRelease, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Fprintf(w, "iofog-connector relay benchmark, %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "host: Linux %s, %d CPUs, %s; measured in %v; load average %s at start, %s at end\n",
		strings.TrimSpace(string(osRelease)), runtime.NumCPU(), runtime.Version(), took.Round(time.Second), b.loadStart, loadavg())
	fmt.Fprintf(w, "connector: %s\n", version(ctx, b.o.bin, "version"))
	fmt.Fprintf(w, "socat: %s; haproxy: %s\n", socatVersion(ctx), version(ctx, "haproxy", "-v"))
	fmt.Fprintf(w, "settings: -stream %v -rounds %d -setup %v -pool %d -idle %d -flood %d -flood-nofile %d -flood-redial %v -flood-samples %d (medians over rounds; loopback; CPU from /proc/PID/stat)\n\n",
		b.o.stream, b.o.rounds, b.o.setup, b.o.pool, b.o.idle, b.o.flood, b.o.floodNoFile, b.o.floodRedial, b.o.floodSamples)
	report.Write(w, b.rows())
	fmt.Fprintln(w)
	b.writeRaw(w)
	if b.mem.held > 0 {
		fmt.Fprintf(w, "\nmemory: Connector VmRSS %.1f MiB before, %.1f MiB with %d idle agent connections (authenticated in %v)\n",
			float64(b.mem.rss0)/(1<<20), float64(b.mem.rss1)/(1<<20), b.mem.held, b.mem.duration.Round(time.Millisecond))
		if b.mem.goOK {
			per := func(before, after float64) float64 { return (after - before) / float64(b.mem.held) }
			fmt.Fprintf(w, "memory: Go heap in use %.0f B and goroutine stacks %.0f B per idle connection\n",
				per(b.mem.go0.heap, b.mem.go1.heap), per(b.mem.go0.stack, b.mem.go1.stack))
		}
	}
	b.writeFloodNotes(w)
	for _, name := range peerOrder() {
		if why, ok := b.missing[name]; ok {
			fmt.Fprintf(w, "not measured: %s: %s\n", label(name), why)
		}
	}
	for _, n := range b.notes {
		fmt.Fprintln(w, "note: "+n)
	}
}

// writeRaw prints every peer's own figures, for comparison with other runs.
func (b *bench) writeRaw(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "peer\tGB/s "+toAgent+"\tGB/s "+toPublic+"\tCPU s/GiB "+toAgent+"\tCPU s/GiB "+toPublic+"\tsessions/s x1\tsessions/s x8\tCPU µs/session x1\tCPU µs/session x8")
	f := func(v float64, format string) string {
		if math.IsNaN(v) {
			return "-"
		}
		return fmt.Sprintf(format, v)
	}
	for _, name := range peerOrder() {
		if _, ok := b.peers[name]; !ok {
			fmt.Fprintf(tw, "%s\tnot measured\t\t\t\t\t\t\t\n", name)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name,
			f(b.rate(toAgent, name)/1e9, "%.2f"), f(b.rate(toPublic, name)/1e9, "%.2f"),
			f(b.cpuPerGiB(toAgent, name), "%.3f"), f(b.cpuPerGiB(toPublic, name), "%.3f"),
			f(b.setupRate(1, name), "%.0f"), f(b.setupRate(8, name), "%.0f"),
			f(b.setupCPU(1, name), "%.0f"), f(b.setupCPU(8, name), "%.0f"))
	}
	tw.Flush()
}

func socatVersion(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "socat", "-V").CombinedOutput()
	if err != nil {
		return "unavailable"
	}
	// socat prints its authors first; the version is on a later line.
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "socat version") {
			return strings.TrimSpace(line)
		}
	}
	return "unknown"
}
