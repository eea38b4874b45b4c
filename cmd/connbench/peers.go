package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/eclipse-iofog/iofog-connector/controlapi"
)

// peer is one thing clients are measured through: the address they dial and
// the process whose CPU time is charged to it (pid 0: nothing, i.e. direct).
type peer struct {
	name string
	addr string
	pid  int
	stop func()
}

// child is a process the run started; stop ends it by its own pid.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  *capture
}

func startChild(name string, args []string, env []string) (*child, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	log := &capture{max: 64 << 10}
	cmd.Stdout = log
	cmd.Stderr = log
	// A benchmark killed half-way must not leave relays listening.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{cmd: cmd, done: make(chan struct{}), log: log}
	go func() {
		cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *child) stop() {
	if c.exited() {
		return
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// output returns the tail of what the child printed, for error messages.
func (c *child) output() string {
	s := strings.TrimSpace(c.log.String())
	if len(s) > 800 {
		s = "..." + s[len(s)-800:]
	}
	return s
}

// capture keeps the first max bytes a child prints, for error messages; the
// child writes while the benchmark may read.
type capture struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - len(c.buf); room > 0 {
		c.buf = append(c.buf, p[:min(len(p), room)]...)
	}
	return len(p), nil
}

func (c *capture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.buf)
}

// waitListening polls until addr accepts a connection, the child exits, or
// the timeout passes.
func waitListening(c *child, addr string, timeout time.Duration) error {
	end := time.Now().Add(timeout)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		if c.exited() {
			return fmt.Errorf("exited before listening on %s: %s", addr, c.output())
		}
		if time.Now().After(end) {
			return fmt.Errorf("not listening on %s after %v: %w", addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free loopback port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// freeRange finds n consecutive free ports below the ephemeral range, so
// outgoing connections never take them while the Connector is not yet
// listening.
func freeRange(n int) (int, error) {
	for range 50 {
		base := 20000 + rand.IntN(10000)
		ok := true
		for p := base; p < base+n && ok; p++ {
			ln, err := net.Listen("tcp", ":"+strconv.Itoa(p))
			if err != nil {
				ok = false
				break
			}
			ln.Close()
		}
		if ok {
			return base, nil
		}
	}
	return 0, errors.New("no free range of ports found between 20000 and 30000")
}

// startProxy starts a relay child that listens on port and waits until it
// accepts.
func startProxy(name, bin string, port int, args []string) (peer, error) {
	c, err := startChild(bin, args, nil)
	if err != nil {
		return peer{}, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := waitListening(c, addr, 10*time.Second); err != nil {
		c.stop()
		return peer{}, fmt.Errorf("%s %w", name, err)
	}
	return peer{name: name, addr: addr, pid: c.pid(), stop: c.stop}, nil
}

// startSplice runs connbench's reference relay as a child: splicing, or
// copying through a buffer of copyBuf bytes when copyBuf > 0.
func startSplice(self, target string, copyBuf int) (peer, error) {
	port, err := freePort()
	if err != nil {
		return peer{}, err
	}
	name := "splice relay"
	if copyBuf > 0 {
		name = "copy relay"
	}
	return startProxy(name, self, port, []string{"relay", "-listen", "127.0.0.1:" + strconv.Itoa(port), "-to", target, "-copy", strconv.Itoa(copyBuf)})
}

func startSocat(target string) (peer, error) {
	bin, err := exec.LookPath("socat")
	if err != nil {
		return peer{}, fmt.Errorf("socat is not installed (scripts/install-bench-deps.sh installs it): %w", err)
	}
	port, err := freePort()
	if err != nil {
		return peer{}, err
	}
	return startProxy("socat", bin, port, []string{fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork", port), "TCP:" + target})
}

func startHAProxy(dir, target string) (peer, error) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		return peer{}, fmt.Errorf("haproxy is not installed (scripts/install-bench-deps.sh installs it): %w", err)
	}
	port, err := freePort()
	if err != nil {
		return peer{}, err
	}
	// Plain layer-4 relaying, as a user would put it in front of a service;
	// timeouts generous enough that none fires mid-measurement.
	text := fmt.Sprintf(`global
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend bench
    bind 127.0.0.1:%d
    default_backend far
backend far
    server far %s
`, port, target)
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		return peer{}, fmt.Errorf("writing haproxy's config: %w", err)
	}
	return startProxy("haproxy", bin, port, []string{"-db", "-f", cfg})
}

// connector is a running Connector daemon in dev mode.
type connector struct {
	*child
	api *controlapi.Client
}

// poolPorts is the size of the Connector's port pool in the benchmark.
const poolPorts = 10

func startConnector(bin, dir string) (*connector, error) {
	return startConnectorWith(bin, dir, nil)
}

// startConnectorWith starts the Connector through a wrapper command (nil:
// directly), e.g. one that lowers its open-file limit.
func startConnectorWith(bin, dir string, wrapper []string) (*connector, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("the Connector binary %s is missing (make out/iofog-connector builds it): %w", bin, err)
	}
	base, err := freeRange(poolPorts + 2)
	if err != nil {
		return nil, err
	}
	apiPort, broker := base, base+1
	cfg := map[string]any{
		"ports":   []string{fmt.Sprintf("%d-%d", base+2, base+1+poolPorts)},
		"exclude": []string{},
		"broker":  broker,
		"address": "127.0.0.1",
		"dev":     true,
		"api":     map[string]any{"http_port": apiPort},
		// As many connections as the open-file limit lets it hold: the
		// memory figure holds about 20,000.
		"relay": map[string]any{"max_connections": 1 << 20},
	}
	text, _ := json.Marshal(cfg)
	cfgPath := filepath.Join(dir, "iofog-connector.conf")
	if err := os.WriteFile(cfgPath, text, 0o644); err != nil {
		return nil, fmt.Errorf("writing the Connector's config: %w", err)
	}
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o755); err != nil {
		return nil, fmt.Errorf("making the Connector's state directory: %w", err)
	}
	args := []string{"run", "--config", cfgPath, "--state-dir", state}
	name := bin
	if len(wrapper) > 0 {
		if abs, err := filepath.Abs(bin); err == nil {
			bin = abs
		}
		name, args = wrapper[0], append(append(slices.Clone(wrapper[1:]), bin), args...)
	}
	c, err := startChild(name, args, nil)
	if err != nil {
		return nil, err
	}
	k := &connector{child: c, api: controlapi.New(fmt.Sprintf("http://127.0.0.1:%d", apiPort), &http.Client{Timeout: 10 * time.Second})}
	end := time.Now().Add(15 * time.Second)
	for {
		st, err := k.api.Status(context.Background())
		if err == nil && st.Status == "running" {
			return k, nil
		}
		if c.exited() {
			return nil, fmt.Errorf("the Connector exited at start-up: %s", c.output())
		}
		if time.Now().After(end) {
			c.stop()
			return nil, fmt.Errorf("the Connector's API at %s did not report running within 15s (last: %v, status %q); its output: %s", k.api.Base, err, st.Status, c.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mapping is the reply to mapping/add.
type mapping struct {
	ID           string
	Port1, Port2 int
	Passcode1    string
}

// addPublic adds a public mapping the way a Controller does, with room for
// maxconn agent connections and a heartbeat threshold longer than the run.
func (k *connector) addPublic(maxconn int) (mapping, error) {
	r, err := k.api.Add(context.Background(), controlapi.Public(maxconn, 3600000))
	if err != nil {
		return mapping{}, fmt.Errorf("adding a public mapping: %w", err)
	}
	return mapping{ID: r.ID, Port1: int(r.Port1), Port2: int(r.Port2), Passcode1: r.Passcode1}, nil
}

func (k *connector) remove(id string) {
	k.api.Remove(context.Background(), id)
}

// goMemory is the Go runtime's own account of the daemon's memory.
type goMemory struct {
	heap, stack float64 // bytes in use
}

// goMemory reads the Go heap and stack bytes in use, if the daemon serves
// Prometheus metrics on its API port.
func (k *connector) goMemory() (goMemory, bool) {
	resp, err := k.api.HTTP.Get(k.api.Base + "/metrics")
	if err != nil {
		return goMemory{}, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return goMemory{}, false
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return goMemory{}, false
	}
	gauge := func(name string) (float64, bool) {
		f, ok := fams[name]
		if !ok || len(f.GetMetric()) == 0 {
			return 0, false
		}
		return f.GetMetric()[0].GetGauge().GetValue(), true
	}
	heap, ok1 := gauge("go_memstats_heap_inuse_bytes")
	stack, ok2 := gauge("go_memstats_stack_inuse_bytes")
	return goMemory{heap: heap, stack: stack}, ok1 && ok2
}

func (k *connector) peer(m mapping) peer {
	return peer{name: "connector", addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(m.Port2)), pid: k.pid(), stop: k.child.stop}
}

// version asks the binary for its version line, for the report header.
func version(ctx context.Context, name string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return "unavailable"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}
