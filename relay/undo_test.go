package relay_test

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/eclipse-iofog/iofog-connector/relay"
	"github.com/eclipse-iofog/iofog-connector/relay/relaytest"
)

const publicMapping = `{"type":"public","maxconnections":60,"heartbeatabsencethreshold":200000}`

// A 200 promises the mapping is stored and listening; when the store cannot
// be written the add is refused and leaves nothing behind.
func TestAddIsUndoneWhenTheStoreCannotBeWritten(t *testing.T) {
	dir := t.TempDir()
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4), StateDir: dir})
	first := in.AddPublic(t, 60, 200000)
	// The previous generation cannot be kept: a directory is in its way.
	if err := os.Mkdir(filepath.Join(dir, relay.StoreFile+".prev"), 0o755); err != nil {
		t.Fatal(err)
	}
	code, r := in.Post(t, "/api/v2/mapping/add", url.Values{"mapping": {publicMapping}})
	if code < 500 || r["status"] != "failed" || r["errormessage"] == nil {
		t.Fatalf("add with an unwritable store: HTTP %d %v, want a failure", code, r)
	}
	_, st := in.Post(t, "/api/v2/status", url.Values{"mappingid": {"all"}})
	if st["mappings"] != 1.0 || st["availablePorts"] != 2.0 {
		t.Errorf("after the failed add: %v, want 1 mapping and 2 free ports", st)
	}
	data, err := os.ReadFile(filepath.Join(dir, relay.StoreFile))
	if err != nil || strings.Count(string(data), `"id"`) != 1 {
		t.Errorf("store after the failed add: %v %s, want the first mapping only", err, data)
	}
	os.Remove(filepath.Join(dir, relay.StoreFile+".prev"))
	second := in.AddPublic(t, 60, 200000)
	if second.Port1 == first.Port1 || second.Port1 == first.Port2 {
		t.Errorf("second mapping %+v reuses the first's ports %+v", second, first)
	}
}

// gate records the ports the Connector opens and closes; it fails on demand.
type gate struct {
	mu     sync.Mutex
	open   []uint16
	fail   bool
	closed []uint16
}

func (g *gate) OpenPorts(ports ...uint16) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fail {
		return errors.New("firewall says no")
	}
	g.open = append(g.open, ports...)
	return nil
}

func (g *gate) ClosePorts(ports ...uint16) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = append(g.closed, ports...)
	return nil
}

func TestPortGateFollowsMappings(t *testing.T) {
	g := &gate{}
	in := relaytest.Start(t, relay.Options{Config: relaytest.Config(t, 4), Gate: g})
	m := in.AddPublic(t, 60, 200000)
	want := []uint16{uint16(m.Port1), uint16(m.Port2)}
	if !slices.Equal(g.open, want) {
		t.Errorf("opened %v, want %v", g.open, want)
	}
	in.Remove(t, m.ID)
	if !slices.Equal(g.closed, want) {
		t.Errorf("closed %v, want %v", g.closed, want)
	}

	// A firewall that refuses: the add fails and its ports do not listen.
	g.mu.Lock()
	g.fail = true
	g.mu.Unlock()
	code, r := in.Post(t, "/api/v2/mapping/add", url.Values{"mapping": {publicMapping}})
	if code < 500 || r["errormessage"] == nil {
		t.Fatalf("add with a refusing firewall: HTTP %d %v", code, r)
	}
	for _, p := range want {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			c.Close()
			t.Errorf("port %d listens after a failed add", p)
		}
	}
	_, st := in.Post(t, "/api/v2/status", url.Values{"mappingid": {"all"}})
	if st["mappings"] != 0.0 || st["availablePorts"] != 4.0 {
		t.Errorf("after the failed add: %v", st)
	}
}

func TestRestartOpensStoredPortsInTheFirewall(t *testing.T) {
	cfg, dir := relaytest.Config(t, 4), t.TempDir()
	first := relaytest.Start(t, relay.Options{Config: cfg, StateDir: dir, Gate: &gate{}})
	m := first.AddPrivate(t, 200000)
	first.Stop(t)
	g := &gate{}
	relaytest.Start(t, relay.Options{Config: cfg, StateDir: dir, Gate: g})
	if want := []uint16{uint16(m.Port1), uint16(m.Port2)}; !slices.Equal(g.open, want) {
		t.Errorf("after restart the firewall opened %v, want %v", g.open, want)
	}
}
