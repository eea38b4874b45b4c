package relay_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/controlapi"
	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
	"github.com/eclipse-iofog/iofog-connector/schema"
)

// childEnv makes the test binary run a Connector instead of the tests: the
// flood test needs one whose open-file limit is lower than the flood,
// without lowering the test's own.
const childEnv = "IOFOG_RELAY_TEST_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(runChild(spec))
	}
	os.Exit(m.Run())
}

// childSpec is what the parent asks of the child Connector.
type childSpec struct {
	NoFile   uint64        `json:"nofile"`
	StateDir string        `json:"state_dir"`
	Config   schema.Config `json:"config"`
}

// runChild lowers RLIMIT_NOFILE, runs a Connector, prints its API address
// and serves until its standard input closes.
func runChild(spec string) int {
	var s childSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		fmt.Fprintln(os.Stderr, "child spec:", err)
		return 2
	}
	lim := syscall.Rlimit{Cur: s.NoFile, Max: s.NoFile}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintln(os.Stderr, "setrlimit:", err)
		return 2
	}
	c, err := relay.New(relay.Options{Config: &s.Config, StateDir: s.StateDir, Version: "test",
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay.New:", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { io.Copy(io.Discard, os.Stdin); cancel() }()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	select {
	case <-c.Ready():
		fmt.Printf("API %s\n", c.APIAddr())
	case err := <-done:
		fmt.Fprintln(os.Stderr, "Run:", err)
		return 1
	}
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "Run:", err)
		return 1
	}
	return 0
}

// startChild runs a Connector with an open-file limit of nofile in a child
// process and returns an Instance-like handle on its API.
func startChild(t *testing.T, nofile uint64, cfg *schema.Config) *relaytest.Instance {
	t.Helper()
	spec, _ := json.Marshal(childSpec{NoFile: nofile, StateDir: t.TempDir(), Config: *cfg})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("child Connector's log:\n%s", stderr.String())
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	api, ok := strings.CutPrefix(strings.TrimSpace(line), "API ")
	if err != nil || !ok {
		t.Fatalf("child Connector did not start: %q %v\n%s", line, err, stderr.String())
	}
	hc := &http.Client{Timeout: hangGuard}
	return &relaytest.Instance{Client: hc, Base: "http://" + api, API: controlapi.New("http://"+api, hc)}
}

// A flood of connections that never authenticate or never speak, larger
// than the Connector's open-file limit, against one mapping: the API, the
// authenticated agents, paired sessions and newcomers that do speak are
// still served, and the refusals are counted.
func TestFloodBeyondTheFileLimitLeavesAPIAgentsAndSessionsServed(t *testing.T) {
	cfg := relaytest.Config(t, 4)
	cfg.Relay.MaxUnauthenticated = 32
	cfg.Relay.MaxWaiting = 32
	const nofile, flood = 256, 600
	in := startChild(t, nofile, cfg)
	m := in.AddPublic(t, 8, 200000)

	// Before the flood: a paired session and an idle pooled agent.
	pub, agent := pairedSession(t, m)
	idle := rawAgent(t, m.Port1, m.Passcode1)

	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := range flood {
		for _, port := range []int{m.Port1, m.Port2} {
			c, err := net.Dial("tcp", addr(port))
			if err != nil {
				t.Fatalf("flood connection %d: %v", i, err)
			}
			held = append(held, c)
		}
		if i%100 == 0 {
			// Slow ones too: a passcode byte now and then.
			io.WriteString(held[len(held)-2], "0")
		}
	}

	// The API answers.
	code, st := in.Post(t, "/api/v2/status", url.Values{"mappingid": {"all"}})
	if code != 200 || st["status"] != "running" {
		t.Fatalf("status during the flood: HTTP %d %v", code, st)
	}
	// The paired session still relays both ways.
	io.WriteString(pub, "ping")
	if got := readN(t, agent, 4); got != "ping" {
		t.Fatalf("paired session: agent got %q", got)
	}
	io.WriteString(agent, "pong")
	if got := readN(t, pub, 4); got != "pong" {
		t.Fatalf("paired session: client got %q", got)
	}
	// A new public client that speaks is paired with the idle agent.
	newPub := dial(t, m.Port2)
	io.WriteString(newPub, "new")
	if got := readN(t, idle, 3); got != "new" {
		t.Fatalf("new public client: agent got %q", got)
	}
	// A new agent authenticates.
	rawAgent(t, m.Port1, m.Passcode1)

	resp, err := in.Client.Get(in.Base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var closed float64
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "iofog_connector_connections_evicted_total") || strings.HasPrefix(line, "iofog_connector_connections_refused_total") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			closed += v
		}
	}
	if closed < flood {
		t.Errorf("limits closed %v flood connections, want at least %d (of %d)", closed, flood, 2*flood)
	}
}
