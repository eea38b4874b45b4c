package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/eclipse-iofog/iofog-connector/cmd/connbench/agent"
	"github.com/eclipse-iofog/iofog-connector/cmd/connbench/report"
	"github.com/eclipse-iofog/iofog-connector/cmd/connbench/traffic"
	"github.com/eclipse-iofog/iofog-connector/controlapi"
)

// runNoFile is `connbench nofile N BIN ARGS...`: it lowers its open-file
// limit to N and becomes BIN, so the Connector under test runs with the
// limit a small box gives it while connbench keeps a high one for the flood.
func runNoFile(args []string, stderr io.Writer) int {
	if len(args) < 2 {
		fmt.Fprintln(stderr, "usage: connbench nofile N BIN [ARGS...]")
		return 2
	}
	n, err := strconv.ParseUint(args[0], 10, 64)
	if err != nil || n < 16 {
		fmt.Fprintf(stderr, "connbench nofile: bad limit %q\n", args[0])
		return 2
	}
	lim := syscall.Rlimit{Cur: n, Max: n}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintf(stderr, "connbench nofile: setrlimit %d: %v\n", n, err)
		return 1
	}
	err = syscall.Exec(args[1], args[1:], os.Environ())
	fmt.Fprintf(stderr, "connbench nofile: exec %s: %v\n", args[1], err)
	return 1
}

// floodResult is the flood measurement: p99 latencies of a legitimate
// public session and of an API call, without and during the flood.
type floodResult struct {
	sessQuiet, sessFlood []time.Duration
	apiQuiet, apiFlood   []time.Duration
	failedQuiet          int
	failedFlood          int
	lastErr              error
	dials                int64   // hostile connections opened during the flood
	closed               float64 // refused or evicted by the Connector's limits
	byLimit              string  // the same, per limit
	fds                  float64 // the Connector's open files during the flood
	err                  error
}

// floodKinds are the hostile connections, one third each: public clients
// that never send, agents that send their passcode one byte a second, and
// agents with a wrong passcode that redial when closed.
const (
	floodSilent = iota
	floodSlow
	floodWrong
)

// measureFlood starts a second Connector with an open-file limit of
// o.floodNoFile, pools agent connections at a public mapping and measures
// sessions and API calls one at a time, first alone, then while o.flood
// hostile connections are held against the same mapping.
func (b *bench) measureFlood(ctx context.Context, dir string) {
	r := &b.flood
	self, err := os.Executable()
	if err != nil {
		r.err = fmt.Errorf("cannot find connbench's own binary: %w", err)
		return
	}
	fdir := dir + "/flood"
	if err := os.MkdirAll(fdir, 0o755); err != nil {
		r.err = err
		return
	}
	k, err := startConnectorWith(b.o.bin, fdir, []string{self, "nofile", strconv.Itoa(b.o.floodNoFile)})
	if err != nil {
		r.err = err
		return
	}
	defer k.stop()
	m, err := k.addPublic(b.o.pool)
	if err != nil {
		r.err = err
		return
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	port1 := net.JoinHostPort("127.0.0.1", strconv.Itoa(m.Port1))
	port2 := net.JoinHostPort("127.0.0.1", strconv.Itoa(m.Port2))
	pool := agent.StartPool(pctx, port1, m.Passcode1, b.o.pool, b.far.Serve)
	end := time.Now().Add(15 * time.Second)
	for pool.Authed() < int64(b.o.pool) && time.Now().Before(end) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	// A client of its own, so the timeout covers one call under the flood.
	api := controlapi.New(k.api.Base, &http.Client{Timeout: 30 * time.Second})
	measure := func() (sess, apiLat []time.Duration, failed int) {
		for range b.o.floodSamples {
			d, err := traffic.Session(ctx, traffic.TCP(port2))
			if err != nil {
				failed++
				r.lastErr = err
				continue
			}
			sess = append(sess, d)
		}
		for range b.o.floodSamples {
			start := time.Now()
			_, err := api.Status(ctx)
			if err != nil {
				failed++
				r.lastErr = err
				continue
			}
			apiLat = append(apiLat, time.Since(start))
		}
		return sess, apiLat, failed
	}
	r.sessQuiet, r.apiQuiet, r.failedQuiet = measure()
	closed0 := limitClosed(k)

	fctx, stopFlood := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var opened atomic.Int64
	sources := []net.IP{{127, 0, 0, 2}, {127, 0, 0, 3}, {127, 0, 0, 4}, {127, 0, 0, 5}}
	for i := range b.o.flood {
		wg.Go(func() {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: sources[i%len(sources)]}}
			hostile(fctx, &d, i%3, port1, port2, b.o.floodRedial, &opened)
		})
	}
	// Let the flood build up before measuring: every slot dialled once.
	built := time.Now().Add(30 * time.Second)
	for opened.Load() < int64(b.o.flood) && time.Now().Before(built) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	r.fds = metricValue(k, "process_open_fds")
	r.sessFlood, r.apiFlood, r.failedFlood = measure()
	r.dials = opened.Load()
	r.closed = limitClosed(k) - closed0
	var parts []string
	for _, what := range []string{"refused", "evicted"} {
		for _, lim := range []string{"connections", "unauthenticated", "waiting"} {
			v := metricValue(k, fmt.Sprintf(`iofog_connector_connections_%s_total{limit="%s"}`, what, lim))
			if v > 0 {
				parts = append(parts, fmt.Sprintf("%s %s %.0f", what, lim, v))
			}
		}
	}
	r.byLimit = strings.Join(parts, ", ")
	stopFlood()
	wg.Wait()
	b.log.Info("flood", "hostile", b.o.flood, "dials", r.dials, "closed_by_limits", r.closed, "connector_fds", r.fds,
		"p99_session_quiet", p99(r.sessQuiet), "p99_session_flood", p99(r.sessFlood),
		"p99_api_quiet", p99(r.apiQuiet), "p99_api_flood", p99(r.apiFlood))
}

// hostile keeps one hostile connection of the given kind open against the
// mapping, dialling again redial after the Connector closes it.
func hostile(ctx context.Context, d *net.Dialer, kind int, port1, port2 string, redial time.Duration, opened *atomic.Int64) {
	wrong := strings.Repeat("0", 36)
	for ctx.Err() == nil {
		to := port1
		if kind == floodSilent {
			to = port2
		}
		c, err := d.DialContext(ctx, "tcp", to)
		if err == nil {
			opened.Add(1)
			stop := context.AfterFunc(ctx, func() { c.Close() })
			switch kind {
			case floodSilent:
				io.Copy(io.Discard, c) // until the Connector closes it
			case floodSlow:
				for i := 0; i < 35 && ctx.Err() == nil; i++ {
					if _, err := c.Write([]byte{'0'}); err != nil {
						break
					}
					time.Sleep(time.Second)
				}
			case floodWrong:
				io.WriteString(c, wrong)
				io.Copy(io.Discard, c)
			}
			stop()
			c.Close()
		}
		select {
		case <-ctx.Done():
		case <-time.After(redial):
		}
	}
}

func metricValue(k *connector, name string) float64 {
	resp, err := k.api.HTTP.Get(k.api.Base + "/metrics")
	if err != nil {
		return math.NaN()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	sum, found := 0.0, false
	for _, line := range strings.Split(string(body), "\n") {
		if line == name || strings.HasPrefix(line, name+" ") || (!strings.HasSuffix(name, "}") && strings.HasPrefix(line, name+"{")) {
			f := strings.Fields(line)
			if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
				sum += v
				found = true
			}
		}
	}
	if !found {
		return math.NaN()
	}
	return sum
}

// limitClosed is how many connections the Connector's limits closed, or
// NaN when it does not count them.
func limitClosed(k *connector) float64 {
	return metricValue(k, "iofog_connector_connections_refused_total") + metricValue(k, "iofog_connector_connections_evicted_total")
}

func p99(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(math.Ceil(0.99*float64(len(s))))-1)]
}

func (b *bench) floodRows() []report.Row {
	r := b.flood
	ms := func(v float64) string { return fmt.Sprintf("%.2f ms", v*1000) }
	sec := func(d []time.Duration) float64 {
		if len(d) == 0 {
			return math.NaN()
		}
		return p99(d).Seconds()
	}
	note := ""
	if r.err != nil {
		note = "not measured: " + r.err.Error()
	} else if r.failedFlood > 0 || r.failedQuiet > 0 {
		note = fmt.Sprintf("%d failed without the flood, %d during it; last: %v", r.failedQuiet, r.failedFlood, r.lastErr)
	}
	what := fmt.Sprintf("%d hostile held, open-file limit %d", b.o.flood, b.o.floodNoFile)
	return []report.Row{
		{Figure: "flood: p99 public session (" + what + ")", Value: sec(r.sessFlood), Baseline: sec(r.sessQuiet),
			BaseName: "same, no flood", Format: ms, Target: report.Target{Limit: 2.0, OnRatio: true}, Note: note},
		{Figure: "flood: p99 API call (" + what + ")", Value: sec(r.apiFlood), Baseline: sec(r.apiQuiet),
			BaseName: "same, no flood", Format: ms, Target: report.Target{Limit: 2.0, OnRatio: true}, Note: note},
	}
}

func (b *bench) writeFloodNotes(w io.Writer) {
	r := b.flood
	if r.err != nil || len(r.sessFlood) == 0 {
		return
	}
	fmt.Fprintf(w, "flood: %d hostile slots (silent public clients, one-byte-a-second passcodes, wrong passcodes; each redials %v after being closed) opened %d connections; the Connector's limits closed %.0f of them (since start: %s); it held %.0f open files during the measurement\n",
		b.o.flood, b.o.floodRedial, r.dials, r.closed, r.byLimit, r.fds)
	fmt.Fprintf(w, "flood: %d sessions and %d API calls each way, one at a time; p99 session %v -> %v, p99 API call %v -> %v\n",
		b.o.floodSamples, b.o.floodSamples, p99(r.sessQuiet).Round(time.Microsecond), p99(r.sessFlood).Round(time.Microsecond),
		p99(r.apiQuiet).Round(time.Microsecond), p99(r.apiFlood).Round(time.Microsecond))
}
