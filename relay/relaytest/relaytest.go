// Package relaytest runs a real Connector on loopback for tests of the
// Connector and of the programs that talk to it.
package relaytest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse-iofog/iofog-connector/controlapi"
	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/schema"
)

// FreePorts finds n consecutive TCP ports that nothing listens on right now
// (on all interfaces, as the Connector listens) and returns them as a pool
// range "A-B".
func FreePorts(t testing.TB, n int) string {
	t.Helper()
	// Below the kernel's usual ephemeral range (32768-60999), so outgoing
	// connections of this or other tests do not take pool ports meanwhile.
	const lo, hi = 10000, 32767
	for range 200 {
		base := lo + rand.IntN(hi-lo-n)
		var lns []net.Listener
		ok := true
		for p := base; p < base+n; p++ {
			ln, err := net.Listen("tcp", ":"+strconv.Itoa(p))
			if err != nil {
				ok = false
				break
			}
			lns = append(lns, ln)
		}
		for _, ln := range lns {
			ln.Close()
		}
		if ok {
			return fmt.Sprintf("%d-%d", base, base+n-1)
		}
	}
	t.Fatalf("no %d consecutive free ports found", n)
	return ""
}

// Config is a dev-mode config with ephemeral API port and a pool of n free
// ports.
func Config(t testing.TB, n int) *schema.Config {
	return &schema.Config{
		Ports: []string{FreePorts(t, n)}, Exclude: []string{}, Broker: 12345, Address: "127.0.0.1", Dev: true,
		API: schema.API{Listen: "127.0.0.1"},
	}
}

// Instance is a running Connector.
type Instance struct {
	*relay.Connector
	Opts   relay.Options
	Client *http.Client       // shared with API: change its Transport for TLS
	Base   string             // API base URL, e.g. http://127.0.0.1:41234
	API    *controlapi.Client // the typed client, for calls that must succeed
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
	err    error         // Run's result, set before done is closed
}

// Start runs a Connector with opts until the test ends (or Stop). Empty
// StateDir and Logger get a temp dir and a test logger.
func Start(t testing.TB, opts relay.Options) *Instance {
	t.Helper()
	if opts.StateDir == "" {
		opts.StateDir = t.TempDir()
	}
	if opts.Logger == nil {
		opts.Logger = Logger(t)
	}
	if opts.Version == "" {
		opts.Version = "test"
	}
	c, err := relay.New(opts)
	if err != nil {
		t.Fatalf("relay.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &Instance{Connector: c, Opts: opts, cancel: cancel, done: make(chan struct{}), Client: &http.Client{Timeout: 30 * time.Second}}
	go func() { in.err = c.Run(ctx); close(in.done) }()
	select {
	case <-c.Ready():
	case <-in.done:
		t.Fatalf("connector stopped before it was ready: %v", in.err)
	case <-time.After(30 * time.Second):
		t.Fatal("connector not ready after 30 s")
	}
	scheme := "http"
	if !opts.Config.Dev {
		scheme = "https"
	}
	in.Base = scheme + "://" + c.APIAddr().String()
	in.API = controlapi.New(in.Base, in.Client)
	t.Cleanup(func() { in.Stop(t) })
	return in
}

// Stop shuts the Connector down and waits for Run to return.
func (in *Instance) Stop(t testing.TB) {
	t.Helper()
	in.cancel()
	select {
	case <-in.done:
		if in.err != nil {
			t.Errorf("connector Run: %v", in.err)
		}
	case <-time.After(30 * time.Second):
		t.Error("connector did not stop within 30 s")
	}
}

// Wait waits for Run to return (after a commandline stop, say) and returns
// its result; done is false if it did not return within timeout.
func (in *Instance) Wait(timeout time.Duration) (done bool, err error) {
	select {
	case <-in.done:
		return true, in.err
	case <-time.After(timeout):
		return false, nil
	}
}

// Post sends a form to an API path and decodes the JSON reply, whatever
// the status: for tests of the replies themselves.
func (in *Instance) Post(t testing.TB, path string, form url.Values) (int, map[string]any) {
	t.Helper()
	code, body, err := in.API.Post(context.Background(), path, form)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	var out map[string]any
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("POST %s: reply is not JSON: %v", path, err)
	}
	return code, out
}

// Mapping is an add reply.
type Mapping struct {
	ID                   string
	Port1, Port2         int
	Passcode1, Passcode2 string
}

// AddPublic adds a public mapping as the Controller does.
func (in *Instance) AddPublic(t testing.TB, max int, thresholdMS int) Mapping {
	t.Helper()
	return in.add(t, controlapi.Public(max, int64(thresholdMS)))
}

// AddPrivate adds a private mapping as the Controller does.
func (in *Instance) AddPrivate(t testing.TB, thresholdMS int) Mapping {
	t.Helper()
	return in.add(t, controlapi.Private(1, int64(thresholdMS)))
}

func (in *Instance) add(t testing.TB, req controlapi.AddRequest) Mapping {
	t.Helper()
	r, err := in.API.Add(context.Background(), req)
	if err != nil || r.Status != "ok" {
		t.Fatalf("mapping/add %s: %+v, %v", req.MappingJSON(), r, err)
	}
	return Mapping{ID: r.ID, Port1: int(r.Port1), Port2: int(r.Port2), Passcode1: r.Passcode1, Passcode2: r.Passcode2}
}

// Remove removes a mapping and fails the test if the Connector refuses.
func (in *Instance) Remove(t testing.TB, id string) {
	t.Helper()
	r, err := in.API.Remove(context.Background(), id)
	if err != nil || r.Status != "ok" {
		t.Fatalf("mapping/remove %s: %+v, %v", id, r, err)
	}
}

// Logger logs through t.Log at debug level, or to stderr with
// IOFOG_TEST_LOG=stderr.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("IOFOG_TEST_LOG") == "stderr" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Quiet is a logger that drops everything, for fuzzing and benchmarks.
func Quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }
